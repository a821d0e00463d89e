"""With cityid running: validation falls back to the OCSP responder and CRLs the certificates
name when the document embeds no revocation data (B-T), and pdfsig checks OCSP online."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cli import main as cityid
from idp.config import CaConfig
from signing.validate import validate
from tests.pki import test_http
from tests.pki.test_http import Live
from tests.signing.conftest import nss_db
from tests.signing.pdfs import make_pdf

live = test_http.live  # the live-server fixture (werkzeug, threaded, configured from cityid.toml)


@pytest.fixture
def ca_config() -> CaConfig:  # the file key store (SoftHSM2 is covered in test_cli.py)
    return CaConfig(crl_shards=2)


def _cli(live: Live, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cityid, [*args, "--data-dir", str(live.data_dir)])
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def test_a_b_t_seal_validates_with_revocation_fetched_online_when_nothing_is_embedded(
    live: Live, tmp_path: Path
) -> None:
    assert _cli(live, "seal", "init")[0] == 0
    src, dst = tmp_path / "in.pdf", tmp_path / "out.pdf"
    src.write_bytes(make_pdf(1))
    assert _cli(live, "seal", "sign", str(src), "--out", str(dst), "--level", "B-T")[0] == 0
    code, out = _cli(live, "signature", "validate", str(dst), "--offline", "--json")
    assert code == 1 and json.loads(out)["signatures"][0]["valid_then"] is False  # nothing to decide with
    code, out = _cli(live, "signature", "validate", str(dst), "--json")  # online fallback: OCSP/CRL
    assert code == 0, out
    (sig,) = json.loads(out)["signatures"]
    assert sig["valid_then"] and sig["level"] == "B-T" and sig["problems"] == []
    root = x509.load_der_x509_certificate(live.get("/pki/root.crt")[0])
    (report,) = validate(dst.read_bytes(), [root]).signatures  # "now" asked of the responder
    assert report.valid_then and report.valid_now is True


def test_pdfsig_trusts_a_seal_checking_ocsp_online(live: Live, tmp_path: Path) -> None:
    assert _cli(live, "seal", "init")[0] == 0
    src, dst = tmp_path / "in.pdf", tmp_path / "out.pdf"
    src.write_bytes(make_pdf(1))
    assert _cli(live, "seal", "sign", str(src), "--out", str(dst))[0] == 0
    root, _ = live.get("/pki/root.crt")
    pem = x509.load_der_x509_certificate(root).public_bytes(Encoding.PEM)
    done = subprocess.run(
        ["pdfsig", "-nssdir", nss_db(tmp_path, pem), str(dst)], capture_output=True, text=True, timeout=60
    )
    assert "Certificate Validation: Certificate is Trusted." in done.stdout, done.stdout + done.stderr


def test_a_b_t_seal_revoked_afterwards_validates_online_as_made_before_the_revocation(
    live: Live, tmp_path: Path
) -> None:
    code, out = _cli(live, "seal", "init", "--json")
    serial = json.loads(out)["serial"]
    src, dst = tmp_path / "in.pdf", tmp_path / "out.pdf"
    src.write_bytes(make_pdf(1))
    assert _cli(live, "seal", "sign", str(src), "--out", str(dst), "--level", "B-T")[0] == 0
    # revocation times are whole seconds (RFC 5280 §5.1.2.6, rounded down): revoke a second later
    time.sleep(1.1)
    assert _cli(live, "cert", "revoke", serial, "--reason", "keyCompromise")[0] == 0
    code, out = _cli(live, "signature", "validate", str(dst), "--json")  # OCSP now says revoked (later)
    assert code == 0, out
    (sig,) = json.loads(out)["signatures"]
    assert sig["valid_then"] is True and sig["valid_now"] is False
    # without cityid's database (any other validator): "now" from the OCSP responder as well
    root = x509.load_der_x509_certificate(live.get("/pki/root.crt")[0])
    (report,) = validate(dst.read_bytes(), [root]).signatures
    assert report.valid_then and report.valid_now is False
