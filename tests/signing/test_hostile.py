"""Validation of uploads from anyone: URLs in certificates that do not chain to the city root
are never fetched (no server-side request forgery through a crafted signature)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

import signing
from signing.validate import validate
from tests.conftest import SERVER_POLL_SECONDS
from tests.signing.conftest import City
from tests.signing.pdfs import make_pdf


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(SERVER_POLL_SECONDS,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", hits
    finally:
        server.shutdown()


def _foreign_signer(url: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A signer certificate from a CA that is not ours; its AIA points at ``url``."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Somebody's CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Stadt Musterstadt (not really)")]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url + "/ocsp")
                    ),
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(url + "/ca.crt"),
                    ),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def test_urls_in_a_foreign_signers_certificate_are_not_fetched(
    city: City, recorder: tuple[str, list[str]]
) -> None:
    url, hits = recorder
    key, cert = _foreign_signer(url)
    prepared = signing.prepare(make_pdf(1), cert, [], level=signing.Level.B_B)  # no issuer: AIA bait
    signed = signing.finish(
        prepared, key.sign(prepared.to_be_signed, ec.ECDSA(hashes.SHA256())), city.context
    )
    (report,) = validate(signed, [city.ca.root_certificate], online=True).signatures
    assert report.intact and not report.trusted and not report.ok and report.valid_now is False
    assert hits == []
