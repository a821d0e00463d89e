"""Device proofs: a compact JWS signed by the device key, its certificate in ``x5c``.

``typ`` is ``device-proof+jwt`` (RFC 8725 §3.11 explicit typing). The certificate is checked
from scratch every time: path to our root (RFC 5280 §6.1), validity, status *from the CA's
database* (never a cached CRL), and that it belongs to an active device; then the signature,
``iat`` window, ``htm``/``htu`` and single use of ``jti`` (as RFC 9449 §4.3 does for DPoP).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from sqlalchemy.orm import Session

import pki
from smartcard.errors import CertificateRevoked, InvalidCertificate, InvalidProof
from smartcard.models import Device, SeenProof

TYP = "device-proof+jwt"
MAX_PROOF = 64 * 1024
DEVICE_PROFILE = "device-auth"
# x5c carries a whole certificate: allow a larger protected header than joserfc's default 512
REGISTRY = jws.JWSRegistry(algorithms=["ES256"])
REGISTRY.max_header_length = 8192


@dataclass(frozen=True)
class VerifiedProof:
    device_id: str
    account_id: str
    claims: dict[str, Any]
    certificate_der: bytes


def _chain_verifier(ca: pki.CertificateAuthority, now: dt.datetime) -> Any:
    builder = PolicyBuilder().store(Store([ca.root_certificate])).time(now)
    return builder.build_client_verifier()


def check_certificate(
    session: Session, ca: pki.CertificateAuthority, der: bytes, now: dt.datetime
) -> tuple[x509.Certificate, Device]:
    """A device certificate we issued, valid now, not revoked, of an active device."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise InvalidCertificate("x5c[0] is not a DER certificate") from exc
    # RFC 5280 §6.1.3 (a)(2): the certificate validity period includes the current time
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise InvalidCertificate("certificate expired or not yet valid", "the device certificate has expired")
    try:
        # RFC 5280 §6.1: path from our root through the issuing CA, signatures, basic
        # constraints, key usage, and (RFC 5280 §4.2.1.12) extendedKeyUsage clientAuth
        _chain_verifier(ca, now).verify(cert, [ca.certificate])
    except VerificationError as exc:
        raise InvalidCertificate(f"path validation failed: {exc}"[:300]) from exc
    try:
        status = pki.status_by_fingerprint(session, hashlib.sha256(der).hexdigest())
    except pki.PkiError as exc:
        raise InvalidCertificate("certificate unknown to the CA") from exc
    # RFC 5280 §6.3 / RFC 6960 §2.2: status as the CA knows it at this moment
    if status.status == "revoked":
        raise CertificateRevoked(f"serial {status.serial} revoked ({status.revocation_reason})")
    if status.status != "issued" or status.profile != DEVICE_PROFILE:
        raise InvalidCertificate(f"certificate is {status.status}/{status.profile}")
    device = (
        session.query(Device).filter(Device.cert_fingerprint == hashlib.sha256(der).hexdigest()).one_or_none()
    )
    if device is None:
        raise InvalidCertificate("certificate of no device")
    if device.revoked_at is not None:
        raise CertificateRevoked("device removed")
    return cert, device


def verify(
    session: Session,
    ca: pki.CertificateAuthority,
    token: str,
    *,
    method: str,
    url: str,
    now: dt.datetime,
    window: dt.timedelta = dt.timedelta(seconds=60),
) -> VerifiedProof:
    if not isinstance(token, str) or not token or len(token) > MAX_PROOF:
        raise InvalidProof("missing or oversized device proof")
    try:
        compact = jws.extract_compact(token.encode("ascii"), registry=REGISTRY)
    except (JoseError, ValueError, UnicodeError) as exc:
        raise InvalidProof(f"not a compact JWS: {type(exc).__name__} {exc}") from exc  # RFC 7515 §7.1
    header = compact.headers()
    if header.get("typ") != TYP:  # RFC 8725 §3.11
        raise InvalidProof(f"typ must be {TYP}")
    if header.get("alg") != "ES256":  # RFC 7518 §3.4; device-auth keys are P-256 (profile)
        raise InvalidProof("alg must be ES256")
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not x5c or not isinstance(x5c[0], str):
        raise InvalidProof("x5c header missing")  # RFC 7515 §4.1.6
    try:
        der = base64.b64decode(x5c[0], validate=True)  # RFC 7515 §4.1.6: base64, not base64url
    except ValueError as exc:
        raise InvalidProof("x5c[0] is not base64") from exc
    cert, device = check_certificate(session, ca, der, now)
    try:
        key = ECKey.import_key(
            cert.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        )
        jws.deserialize_compact(token, key, algorithms=["ES256"], registry=REGISTRY)  # RFC 7515 §5.2
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidProof("signature does not verify with the certificate's key") from exc
    try:
        claims = json.loads(compact.payload)
    except ValueError as exc:
        raise InvalidProof("payload is not JSON") from exc
    if not isinstance(claims, dict):
        raise InvalidProof("payload is not an object")
    jti, htm, htu, iat = (claims.get(k) for k in ("jti", "htm", "htu", "iat"))
    if not (isinstance(jti, str) and 0 < len(jti) <= 100 and isinstance(htm, str) and isinstance(htu, str)):
        raise InvalidProof("jti, htm or htu missing")
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise InvalidProof("iat missing")
    if not hmac.compare_digest(htm, method):  # as RFC 9449 §4.3 (9)
        raise InvalidProof("htm does not match the request")
    if not hmac.compare_digest(htu.split("?")[0].rstrip("/"), url.split("?")[0].rstrip("/")):
        raise InvalidProof("htu does not match the request")  # as RFC 9449 §4.3 (10)
    if abs(now.timestamp() - iat) > window.total_seconds():  # as RFC 9449 §4.3 (12)
        raise InvalidProof("iat outside the acceptable window")
    seen = f"dev:{device.id}:{jti}"
    if session.get(SeenProof, seen) is not None:  # as RFC 9449 §11.1: single use
        raise InvalidProof("proof replayed")
    session.add(SeenProof(key=seen, expires_at=now + 2 * window))
    session.flush()
    return VerifiedProof(device.id, device.account_id, claims, der)
