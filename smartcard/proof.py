"""Device proofs: a compact JWS signed by the device key, its certificate in ``x5c``.

``typ`` is ``device-proof+jwt`` (RFC 8725 §3.11 explicit typing). Every proof checks the
certificate's path to our root (RFC 5280 §6.1), its validity, its status *from the CA's
database* (never a cached CRL), and that it belongs to an active device; then the signature,
``iat`` window, ``htm``/``htu`` and single use of ``jti`` (as RFC 9449 §4.3 does for DPoP).

What is cached per process is only what cannot change: a parsed certificate and its imported
key (by DER), and the fact that the issuing CA's own certificate chains to the root (checked in
full, with the first device certificate it is seen with). Later proofs validate the device
certificate against the issuing CA and re-check the CA's and the root's validity period at the
proof's time. Status, device and ``jti`` come from the database every time.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from sqlalchemy import Table, bindparam, select, update

import pki
from pki.models import CaCertificate
from pki.revocation import REASON_NAMES
from smartcard import replay
from smartcard.errors import CertificateRevoked, InvalidCertificate, InvalidProof
from smartcard.models import Device, SeenProof
from smartcard.sql import Db, connection

TYP = "device-proof+jwt"
MAX_PROOF = 64 * 1024
DEVICE_PROFILE = "device-auth"
# x5c carries a whole certificate: allow a larger protected header than joserfc's default 512
REGISTRY = jws.JWSRegistry(algorithms=["ES256"])
REGISTRY.max_header_length = 8192

_CERTS = cast(Table, CaCertificate.__table__)
_DEVICES = cast(Table, Device.__table__)
_SEEN = cast(Table, SeenProof.__table__)
# RFC 5280 §6.3 / RFC 6960 §2.2: the CA's record and the device row, one statement
_STATUS = (
    select(
        _CERTS.c.serial,
        _CERTS.c.status,
        _CERTS.c.profile,
        _CERTS.c.revocation_reason,
        _DEVICES.c.id,
        _DEVICES.c.account_id,
        _DEVICES.c.max_level,
        _DEVICES.c.revoked_at,
    )
    .select_from(_CERTS.outerjoin(_DEVICES, _DEVICES.c.cert_fingerprint == _CERTS.c.fingerprint_sha256))
    .where(_CERTS.c.fingerprint_sha256 == bindparam("fp"))
)
_TOUCH = update(_DEVICES).where(_DEVICES.c.id == bindparam("device")).values(last_used_at=bindparam("at"))


@dataclass(frozen=True)
class ActiveDevice:
    """The device a valid certificate belongs to, as the database says at this moment."""

    id: str
    account_id: str
    max_level: int | None


@dataclass(frozen=True)
class VerifiedProof:
    device_id: str
    account_id: str
    claims: dict[str, Any]
    certificate_der: bytes
    device_max_level: int | None = None


@functools.lru_cache(maxsize=4096)
def _parsed(der: bytes) -> tuple[x509.Certificate, ECKey]:
    """A certificate and its key in joserfc form; immutable, so parsed once per DER."""
    cert = x509.load_der_x509_certificate(der)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return cert, ECKey.import_key(spki)


@dataclass(frozen=True)
class _ValidatedIssuer:
    """An issuing CA whose path to ``root`` passed full validation in this process."""

    issuing: x509.Certificate
    root: x509.Certificate
    anchored: Store  # the issuing CA as the trust anchor for its device certificates


# keyed by the identity of the (immutable, loaded once) certificate objects; the entry holds
# them, so an identity is never reused while its entry exists
_ISSUERS: dict[tuple[int, int], _ValidatedIssuer] = {}
_MAX_ISSUERS = 16


def _within(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def check_path(ca: pki.CertificateAuthority, cert: x509.Certificate, now: dt.datetime) -> None:
    """RFC 5280 §6.1: path from our root through the issuing CA to ``cert`` at ``now``.

    Signatures, basic constraints, key usage, name chaining and (RFC 5280 §4.2.1.12)
    extendedKeyUsage clientAuth. Raises :class:`VerificationError`.
    """
    issuing, root = ca.certificate, ca.root_certificate
    known = _ISSUERS.get((id(issuing), id(root)))
    if known is None or known.issuing is not issuing or known.root is not root:
        # the whole path, root -> issuing CA -> device
        verifier = PolicyBuilder().store(Store([root])).time(now).build_client_verifier()
        verifier.verify(cert, [issuing])
        if len(_ISSUERS) >= _MAX_ISSUERS:
            _ISSUERS.clear()
        _ISSUERS[(id(issuing), id(root))] = _ValidatedIssuer(issuing, root, Store([issuing]))
        return
    # RFC 5280 §6.1.3 (a)(2): every certificate on the path is valid at ``now``; the issuing
    # CA's signature and constraints were validated in full above and do not change
    if not (_within(issuing, now) and _within(root, now)):
        raise VerificationError("the issuing CA or the root is not valid now")
    PolicyBuilder().store(known.anchored).time(now).build_client_verifier().verify(cert, [])


def check_certificate(
    db: Db, ca: pki.CertificateAuthority, der: bytes, now: dt.datetime
) -> tuple[x509.Certificate, ActiveDevice]:
    """A device certificate we issued, valid now, not revoked, of an active device."""
    try:
        cert, _key = _parsed(der)
    except (ValueError, JoseError) as exc:  # JoseError: a key that is not EC (RSA, Ed25519 …)
        raise InvalidCertificate("x5c[0] is not a DER certificate with an EC key") from exc
    # RFC 5280 §6.1.3 (a)(2): the certificate validity period includes the current time
    if not _within(cert, now):
        raise InvalidCertificate("certificate expired or not yet valid", "the device certificate has expired")
    try:
        check_path(ca, cert, now)
    except VerificationError as exc:
        raise InvalidCertificate(f"path validation failed: {exc}"[:300]) from exc
    found = connection(db).execute(_STATUS, {"fp": hashlib.sha256(der).hexdigest()}).first()
    if found is None:
        raise InvalidCertificate("certificate unknown to the CA")
    serial, status, profile, reason, device_id, account_id, max_level, removed_at = found
    # RFC 5280 §6.3 / RFC 6960 §2.2: status as the CA knows it at this moment
    if status == "revoked":
        reason_name = None if reason is None else REASON_NAMES.get(reason, str(reason))
        raise CertificateRevoked(f"serial {serial} revoked ({reason_name})")
    if status != "issued" or profile != DEVICE_PROFILE:
        raise InvalidCertificate(f"certificate is {status}/{profile}")
    if device_id is None:
        raise InvalidCertificate("certificate of no device")
    if removed_at is not None:
        raise CertificateRevoked("device removed")
    return cert, ActiveDevice(device_id, account_id, max_level)


def touch(db: Db, device_id: str, now: dt.datetime) -> None:
    """Remember when a device was last used (one Core statement)."""
    connection(db).execute(_TOUCH, {"device": device_id, "at": now})


def verify(
    session: Db,
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
    conn = connection(session)
    _cert, device = check_certificate(conn, ca, der, now)
    try:
        # RFC 7515 §5.2: the signature, with the certificate's key
        valid = jws.validate_compact(compact, _parsed(der)[1], registry=REGISTRY)
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidProof("signature does not verify with the certificate's key") from exc
    if not valid:
        raise InvalidProof("signature does not verify with the certificate's key")
    try:
        claims = json.loads(compact.payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
        raise InvalidProof("payload is not JSON") from exc
    if not isinstance(claims, dict):
        raise InvalidProof("payload is not an object")
    jti, htm, htu, iat = (claims.get(k) for k in ("jti", "htm", "htu", "iat"))
    if not (isinstance(jti, str) and 0 < len(jti) <= 100 and isinstance(htm, str) and isinstance(htu, str)):
        raise InvalidProof("jti, htm or htu missing")
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise InvalidProof("iat missing")
    # bytes: compare_digest refuses text with non-ASCII characters (a 500, not a refusal)
    if not hmac.compare_digest(htm.encode(), method.encode()):  # as RFC 9449 §4.3 (9)
        raise InvalidProof("htm does not match the request")
    if not hmac.compare_digest(
        htu.split("?")[0].rstrip("/").encode(), url.split("?")[0].rstrip("/").encode()
    ):
        raise InvalidProof("htu does not match the request")  # as RFC 9449 §4.3 (10)
    # as RFC 9449 §4.3 (12), in whole numbers: a float of `now - 10**400` overflows
    if abs(int(now.timestamp()) - iat) > window.total_seconds():
        raise InvalidProof("iat outside the acceptable window")
    # as RFC 9449 §11.1: single use, decided by the database's unique key
    if not replay.first_use(conn, _SEEN, f"dev:{device.id}:{jti}", now + 2 * window):
        raise InvalidProof("proof replayed")
    return VerifiedProof(device.id, device.account_id, claims, der, device.max_level)
