"""The wallet route's configuration is checked before serving (idp.config.wallet_problem)."""

from __future__ import annotations

import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from idp.config import Config, WalletConfig, serve_problem, wallet_problem
from walletsim.pid import TestPidProvider, make_ca, make_leaf


def _files(tmp_path: Path, dns: str | None) -> WalletConfig:
    ca_key, ca = make_ca("TEST verifier CA")
    key, cert = make_leaf(ca_key, ca, "verifier", dns=dns)
    other, _c = make_leaf(ca_key, ca, "other", dns=dns)
    (tmp_path / "anchors.pem").write_bytes(TestPidProvider().root_pem)
    (tmp_path / "v.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (tmp_path / "other.key").write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (tmp_path / "v.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return WalletConfig(
        enabled=True,
        trust_anchors_file=str(tmp_path / "anchors.pem"),
        verifier_key_file=str(tmp_path / "v.key"),
        verifier_cert_file=str(tmp_path / "v.pem"),
    )


def _cfg(issuer: str, wallet: WalletConfig) -> Config:
    return Config(
        issuer=issuer,
        secret_key=secrets.token_urlsafe(32),
        key_passphrase=secrets.token_urlsafe(32),
        wallet=wallet,
    )


def test_verifier_certificate_must_name_the_issuer_host_x509_san_dns(tmp_path: Path) -> None:
    good = _files(tmp_path, "id.musterstadt.example")
    assert wallet_problem(_cfg("https://id.musterstadt.example", good)) is None
    problem = wallet_problem(_cfg("https://elsewhere.example", good))
    assert problem is not None and "dNSName" in problem


def test_verifier_key_must_match_the_certificate_and_files_must_exist(tmp_path: Path) -> None:
    w = _files(tmp_path, "id.musterstadt.example")
    from dataclasses import replace

    problem = wallet_problem(
        _cfg("https://id.musterstadt.example", replace(w, verifier_key_file=str(tmp_path / "other.key")))
    )
    assert problem is not None and "not for verifier_key_file" in problem
    problem = wallet_problem(_cfg("https://id.musterstadt.example", replace(w, trust_anchors_file="")))
    assert problem is not None and "trust_anchors_file" in problem
    problem = wallet_problem(
        _cfg("https://id.musterstadt.example", replace(w, client_id_prefix="redirect_uri"))
    )
    assert problem is not None and "client_id_prefix" in problem


def test_test_pid_providers_only_on_loopback(tmp_path: Path) -> None:
    from dataclasses import replace

    w = replace(_files(tmp_path, "id.musterstadt.example"), simulation=True)
    problem = serve_problem(_cfg("https://id.musterstadt.example", w))
    assert problem is not None and "development only" in problem
