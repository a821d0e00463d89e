"""RFC 8705 certificate-bound access tokens, with the device certificate as the client's TLS
certificate.

TLS ends at a trusted reverse proxy that verifies the client certificate's possession in the
handshake and passes it on in one header (``Config.mtls_client_cert_header``, e.g. nginx's
``$ssl_client_escaped_cert``). The proxy MUST strip that header from client requests; the
feature is off unless the header name is configured. Only certificates that our CA issued to a
device, still good in the CA's database, are accepted.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.crypto import equal

MAX_HEADER = 8192


class MtlsError(Exception):
    error = "invalid_client"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(frozen=True)
class DeviceCertificate:
    thumbprint: str  # RFC 8705 §3.1: base64url SHA-256 of the DER certificate
    device_id: str
    account_id: str


def presented(headers: Any, header_name: str) -> x509.Certificate | None:
    """The certificate the proxy passed on, or None when there is none (or mTLS is off)."""
    if not header_name:
        return None
    raw = headers.get(header_name)
    if not raw:
        return None
    if len(raw) > MAX_HEADER:
        raise MtlsError("client certificate header too large")
    pem = unquote(raw).strip()
    if "\n" not in pem:  # some proxies put the PEM on one line with spaces
        body = pem.replace("-----BEGIN CERTIFICATE-----", "").replace("-----END CERTIFICATE-----", "")
        pem = "-----BEGIN CERTIFICATE-----\n" + "\n".join(body.split()) + "\n-----END CERTIFICATE-----\n"
    try:
        return x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeError) as exc:
        raise MtlsError("client certificate is not a PEM certificate") from exc


def thumbprint(cert: x509.Certificate) -> str:
    return thumbprint_of_digest(hashlib.sha256(cert.public_bytes(Encoding.DER)).digest())


def thumbprint_of_digest(digest: bytes) -> str:
    """RFC 8705 §3.1 x5t#S256: base64url of the SHA-256 of the certificate's DER (for a digest
    already known, e.g. the CA's recorded fingerprint)."""
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def device_certificate(session: Session, cert: x509.Certificate, now: dt.datetime) -> DeviceCertificate:
    """Accept only a good device certificate of our CA, of an active device (RFC 8705 §2)."""
    import pki
    from pki.errors import PkiError
    from smartcard.models import Device

    der = cert.public_bytes(Encoding.DER)
    try:
        status = pki.status_of_certificate(session, der)
    except PkiError as exc:
        raise MtlsError("certificate not issued by this CA") from exc
    if not status.is_good(now):  # RFC 5280 §6.1.3: validity and revocation, from the database
        raise MtlsError("certificate revoked or expired")
    fingerprint = hashlib.sha256(der).hexdigest()
    device = session.execute(select(Device).where(Device.cert_fingerprint == fingerprint)).scalar()
    if device is None or device.revoked_at is not None:
        raise MtlsError("certificate does not belong to an active device")
    return DeviceCertificate(thumbprint(cert), device.id, device.account_id)


def matches(bound: str, cert: x509.Certificate | None) -> bool:
    """RFC 8705 §3.2: the presented certificate's SHA-256 thumbprint equals ``cnf.x5t#S256``."""
    return cert is not None and equal(bound, thumbprint(cert))
