"""OCSP over HTTP through the plain-WSGI fast path (idp/ocsp_wsgi.py) in front of Flask.

The app is built as `cityid serve` builds it; revocations go through the real CLI, i.e. through
another engine and other connections than the ones the responder reads with.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from flask.testing import FlaskClient
from sqlalchemy import select, text

from cli import main as cityid
from db import make_engine, make_session_factory
from idp.app import create_app
from idp.config import CaConfig, load_config
from idp.ocsp_wsgi import OcspFastPath
from pki.models import CaOcspCache
from tests.pki.helpers import DEVICE_ID, make_csr, name
from tests.pki.test_http import write_config

OCSP_REQUEST = {"Content-Type": "application/ocsp-request"}


@dataclass
class Responder:
    client: FlaskClient
    data_dir: Path
    db_url: str
    issuing: x509.Certificate

    def cli(self, *args: str) -> dict:
        result = CliRunner().invoke(cityid, [*args, "--data-dir", str(self.data_dir), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def issue(self, tmp: Path) -> tuple[str, x509.Certificate]:
        csr = tmp / "device.csr"
        csr.write_bytes(make_csr())
        out = self.cli(
            "cert", "issue", "--csr", str(csr), "--profile", "device-auth", "--device-id", DEVICE_ID
        )
        return out["serial"], x509.load_pem_x509_certificate(out["certificate_pem"].encode())

    def post(self, der: bytes) -> ocsp.OCSPResponse:
        resp = self.client.post("/pki/ocsp", data=der, headers=OCSP_REQUEST)
        assert resp.status_code == 200 and resp.mimetype == "application/ocsp-response"
        return ocsp.load_der_ocsp_response(resp.data)

    def get(self, der: bytes) -> ocsp.OCSPResponse:
        encoded = urllib.parse.quote(base64.b64encode(der).decode(), safe="")
        resp = self.client.get("/pki/ocsp/" + encoded)
        assert resp.status_code == 200 and resp.mimetype == "application/ocsp-response"
        return ocsp.load_der_ocsp_response(resp.data)


@pytest.fixture
def responder(db_url: str, ca_config: CaConfig, tmp_path: Path) -> Iterator[Responder]:
    data_dir = tmp_path / "data"
    write_config(data_dir, db_url, "https://ca.test.invalid", ca_config)
    init = CliRunner().invoke(cityid, ["ca", "init", "--data-dir", str(data_dir), "--json"])
    assert init.exit_code == 0, init.output
    app = create_app(load_config(data_dir))
    client = app.test_client()
    issuing = x509.load_der_x509_certificate(client.get("/pki/issuing.crt").data)
    yield Responder(client, data_dir, db_url, issuing)
    app.extensions["cityid"].engine.dispose()


def _request(cert: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def test_the_ocsp_urls_are_answered_in_front_of_flask(responder: Responder) -> None:
    app = responder.client.application
    wrapped = app.wsgi_app
    while not isinstance(wrapped, OcspFastPath):  # other middleware may sit further out
        wrapped = wrapped.wrapped  # type: ignore[attr-defined]
    assert isinstance(wrapped, OcspFastPath)


def test_good_then_revoked_at_the_very_next_request_after_a_cli_revocation_rfc6960_2_2(
    responder: Responder, tmp_path: Path
) -> None:
    serial, cert = responder.issue(tmp_path)
    req = _request(cert, responder.issuing)
    assert responder.post(req).certificate_status == ocsp.OCSPCertStatus.GOOD  # signed, cached
    cached = responder.client.post("/pki/ocsp", data=req, headers=OCSP_REQUEST)
    assert cached.cache_control.max_age and cached.cache_control.public  # RFC 5019 §6.2
    assert responder.get(req).certificate_status == ocsp.OCSPCertStatus.GOOD

    responder.cli("cert", "revoke", serial, "--reason", "keyCompromise")  # another engine
    for ask in (responder.get, responder.post):
        revoked = ask(req)
        assert revoked.certificate_status == ocsp.OCSPCertStatus.REVOKED
        assert revoked.revocation_reason == x509.ReasonFlags.key_compromise


def test_cached_answers_are_read_without_taking_the_write_lock(responder: Responder, tmp_path: Path) -> None:
    serial, cert = responder.issue(tmp_path)
    req = _request(cert, responder.issuing)
    first = responder.client.post("/pki/ocsp", data=req, headers=OCSP_REQUEST).data
    engine = make_engine(responder.db_url)
    try:
        with make_session_factory(engine)() as writer:
            # a writer holds its transaction (on SQLite: BEGIN IMMEDIATE, the database's write
            # lock) with the cached row locked; readers of the cache must not queue behind it
            writer.execute(select(CaOcspCache).where(CaOcspCache.serial == serial).with_for_update())
            writer.execute(text("UPDATE ca_crl_state SET stale = stale"))
            again = responder.client.post("/pki/ocsp", data=req, headers=OCSP_REQUEST).data
            writer.rollback()
    finally:
        engine.dispose()
    assert again == first  # the same pre-signed bytes, from the cache


def test_a_nonce_is_echoed_over_http_and_not_served_from_the_cache_rfc8954_2_1(
    responder: Responder, tmp_path: Path
) -> None:
    _, cert = responder.issue(tmp_path)
    responder.post(_request(cert, responder.issuing))  # caches the answer without a nonce
    resp = responder.post(_request(cert, responder.issuing, nonce=b"\x07" * 16))
    assert resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"\x07" * 16
    raw = responder.client.post(
        "/pki/ocsp", data=_request(cert, responder.issuing, nonce=b"\x08" * 16), headers=OCSP_REQUEST
    )
    assert raw.cache_control.no_store


@pytest.mark.parametrize(
    "body",
    [b"", b"\x30\x80", b"GET / HTTP/1.1", b"\x30\x03\x02\x01\x01", b"\xff" * 1000],
    ids=["empty", "indefinite", "text", "wrong-structure", "junk"],
)
def test_malformed_posts_get_malformed_request_rfc6960_2_3(body: bytes, responder: Responder) -> None:
    assert responder.post(body).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize("path", ["not-base64!", "bm90IGFuIE9DU1AgcmVxdWVzdA==", "%2F%2F%2F"])
def test_malformed_get_paths_get_malformed_request_rfc6960_a_1(path: str, responder: Responder) -> None:
    resp = responder.client.get("/pki/ocsp/" + path)
    assert resp.status_code == 200
    assert ocsp.load_der_ocsp_response(resp.data).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_a_request_about_another_issuer_is_unauthorized_rfc6960_2_3(
    responder: Responder, tmp_path: Path
) -> None:
    _, cert = responder.issue(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    other = (
        x509.CertificateBuilder()
        .subject_name(name(CN="Other CA"))
        .issuer_name(name(CN="Other CA"))
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .sign(key, hashes.SHA256())
    )
    for ask in (responder.post, responder.get):
        assert ask(_request(cert, other)).response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_an_unknown_serial_is_unauthorized_not_signed_and_not_cacheable_rfc5019_2_2_3(
    responder: Responder, tmp_path: Path
) -> None:
    _, cert = responder.issue(tmp_path)
    answers = []
    for serial in (cert.serial_number ^ 0xFFFF, cert.serial_number + 1, "rotate", 7):
        if serial == "rotate":  # a new OCSP signer (another process) changes nothing here
            responder.cli("ca", "ocsp-signer", "rotate")
            continue
        req = (
            ocsp.OCSPRequestBuilder()
            .add_certificate_by_hash(*_issuer_hashes(responder.issuing), int(serial), hashes.SHA1())
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        resp = responder.client.post("/pki/ocsp", data=req, headers=OCSP_REQUEST)
        assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
        answers.append(resp.data)
    assert len(set(answers)) == 1
    assert ocsp.load_der_ocsp_response(answers[0]).response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED
    with make_engine(responder.db_url).connect() as conn:  # nothing was signed, nothing stored
        assert conn.execute(select(CaOcspCache)).first() is None


def _issuer_hashes(issuer: x509.Certificate) -> tuple[bytes, bytes]:
    n, k = hashes.Hash(hashes.SHA1()), hashes.Hash(hashes.SHA1())
    n.update(issuer.subject.public_bytes())
    k.update(
        issuer.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )
    return n.finalize(), k.finalize()


def test_other_methods_and_paths_still_reach_flask(responder: Responder) -> None:
    assert responder.client.put("/pki/ocsp", data=b"x").status_code == 405
    assert responder.client.get("/pki/chain.pem").status_code == 200
    too_large = responder.client.post("/pki/ocsp", data=b"\x30" * (64 * 1024 + 1), headers=OCSP_REQUEST)
    assert too_large.status_code == 413


@pytest.fixture
def file_store_instance(db_url: str, tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    write_config(data_dir, db_url, "https://ca.test.invalid", CaConfig(crl_shards=4))
    init = CliRunner().invoke(cityid, ["init", "--data-dir", str(data_dir), "--json"])
    assert init.exit_code == 0, init.output
    return data_dir


def test_a_machine_without_the_ocsp_signer_key_answers_internal_error_rfc6960_2_3(
    file_store_instance: Path, tmp_path: Path
) -> None:
    app = create_app(load_config(file_store_instance))
    try:
        responder = Responder(app.test_client(), file_store_instance, "", None)  # type: ignore[arg-type]
        _serial, cert = responder.issue(tmp_path)
        responder.issuing = x509.load_der_x509_certificate(responder.client.get("/pki/issuing.crt").data)
        for key in (file_store_instance / "ca-keys").glob("*ocsp*"):
            key.unlink()  # as on a second machine whose key store was never shared
        resp = responder.client.post(
            "/pki/ocsp", data=_request(cert, responder.issuing), headers=OCSP_REQUEST
        )
        assert resp.status_code == 200 and resp.mimetype == "application/ocsp-response"
        answer = ocsp.load_der_ocsp_response(resp.data)
        assert answer.response_status == ocsp.OCSPResponseStatus.INTERNAL_ERROR
    finally:
        app.extensions["cityid"].engine.dispose()


@pytest.mark.parametrize("missing", ["ocsp-*", "issuing-*", "tsa-*"])
def test_serve_refuses_to_start_on_a_machine_that_cannot_read_the_ca_keys(
    file_store_instance: Path, missing: str
) -> None:
    import subprocess
    import sys

    keys = list((file_store_instance / "ca-keys").glob(missing))
    assert keys
    for key in keys:
        key.unlink()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "serve",
            "--data-dir",
            str(file_store_instance),
            "--bind",
            "127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "cannot use the CA's keys" in res.stderr and "not found" in res.stderr


def test_ocsp_reader_connections_do_not_starve_the_pages_of_the_pool(
    responder: Responder, tmp_path: Path
) -> None:
    """Each server thread keeps one reader connection for OCSP; with more threads than the pool
    holds (5 + 10 overflow), page requests must still get theirs."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    _serial, cert = responder.issue(tmp_path)
    req = _request(cert, responder.issuing)
    threads = 20
    barrier = threading.Barrier(threads)

    def ask(_: int) -> ocsp.OCSPResponseStatus:
        barrier.wait()  # one request on each of 20 threads, all alive together
        return responder.post(req).response_status

    with ThreadPoolExecutor(threads) as pool:
        assert set(pool.map(ask, range(threads))) == {ocsp.OCSPResponseStatus.SUCCESSFUL}
        started = time.monotonic()
        assert responder.client.get("/login").status_code == 200  # a page that writes its session
        assert time.monotonic() - started < 5
