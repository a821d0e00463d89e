"""Apple App Attest: attestation objects and assertions.

Spec: Apple Developer, "Validating apps that connect to your server" (attestation steps 1-9,
assertion steps 1-6) and "Attestation Object Validation Guide". The attestation object is CBOR
(``fido2.cbor``) in WebAuthn shape; its authenticator data is parsed by ``fido2.webauthn``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)
from fido2 import cbor

from .asn1 import AppleNonceSchema
from .chain import validate_path
from .config import AppleApp, TrustStore
from .errors import (
    AaguidMismatch,
    ChallengeMismatch,
    CounterNotIncreasing,
    KeyMismatch,
    MalformedEvidence,
    RpIdMismatch,
    SignatureInvalid,
    UnsupportedFormat,
)
from .result import AttestationResult, AttestedApp, DeviceFacts, SecurityLevel

FORMAT = "apple-appattest"
NONCE_OID = x509.ObjectIdentifier("1.2.840.113635.100.8.2")
AAGUID_PRODUCTION = b"appattest" + b"\x00" * 7
AAGUID_DEVELOPMENT = b"appattestdevelop"


def _decode_cbor_map(data: bytes, what: str) -> dict[Any, Any]:
    if not isinstance(data, bytes | bytearray) or not data:
        raise MalformedEvidence(f"{what} is empty")
    try:
        value = cbor.decode(bytes(data))
    except Exception as e:  # noqa: BLE001 - fido2.cbor raises many types on hostile input
        raise MalformedEvidence(f"{what} is not CBOR: {type(e).__name__}") from None
    if not isinstance(value, dict):
        raise MalformedEvidence(f"{what} is not a CBOR map")
    return value


@dataclass(frozen=True, slots=True)
class _AttestedAuthData:
    """WebAuthn §6.1 authenticator data with attested credential data (§6.5.1)."""

    rp_id_hash: bytes
    counter: int
    aaguid: bytes
    credential_id: bytes
    cose_key: dict[Any, Any]


def _auth_data(raw: object) -> _AttestedAuthData:
    # Read by hand (fixed offsets + one CBOR map): fido2's AuthenticatorData builds a CoseKey
    # object per call, which costs more than the rest of these checks together.
    if not isinstance(raw, bytes) or len(raw) < 55:
        raise MalformedEvidence("authenticator data is too short for attested credential data")
    if not raw[32] & 0x40:
        raise MalformedEvidence("authenticator data has no attested credential data (AT flag)")
    id_len = int.from_bytes(raw[53:55], "big")
    key_start = 55 + id_len
    if len(raw) <= key_start:
        raise MalformedEvidence("authenticator data is truncated")
    try:
        cose_key, rest = cbor.decode_from(raw[key_start:])
    except Exception as e:  # noqa: BLE001 - fido2.cbor raises many types on hostile input
        raise MalformedEvidence(f"credential public key is not CBOR: {type(e).__name__}") from None
    if rest or not isinstance(cose_key, dict):
        raise MalformedEvidence("credential public key is not one CBOR map")
    return _AttestedAuthData(
        rp_id_hash=raw[:32],
        counter=int.from_bytes(raw[33:37], "big"),
        aaguid=raw[37:53],
        credential_id=raw[55:key_start],
        cose_key=cose_key,
    )


def _as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else b""


def _cert_nonce(cred_cert: x509.Certificate) -> bytes:
    try:
        ext = cred_cert.extensions.get_extension_for_oid(NONCE_OID)
    except x509.ExtensionNotFound:
        raise MalformedEvidence("credCert has no nonce extension") from None
    except ValueError as e:
        raise MalformedEvidence(f"credCert extensions are invalid: {e}") from None
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        raise MalformedEvidence("extension value is not an OCTET STRING payload")
    try:
        nonce = AppleNonceSchema.load(ext.value.value, strict=True)["nonce"].native
    except Exception as e:  # noqa: BLE001 - asn1crypto raises many types on hostile input
        raise MalformedEvidence(f"nonce extension is invalid: {type(e).__name__}") from None
    if not isinstance(nonce, bytes):
        raise MalformedEvidence("nonce extension holds no OCTET STRING")
    return nonce


def _uncompressed_point(cert: x509.Certificate) -> bytes:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise KeyMismatch("credCert key is not a P-256 key")
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def verify_app_attest(
    attestation_object: bytes,
    *,
    key_id: bytes,
    client_data_hash: bytes,
    app: AppleApp,
    trust: TrustStore,
    now: datetime,
) -> AttestationResult:
    """Verify an App Attest attestation object.

    ``client_data_hash`` is the value the app passed to ``attestKey``; cityid's app passes
    SHA-256(challenge), which ``attestation.verify`` computes. Apple's published sample passes
    the challenge bytes themselves, which is why the hash is a parameter here.
    """
    obj = _decode_cbor_map(attestation_object, "attestation object")
    # App Attest: fmt is "apple-appattest"
    if obj.get("fmt") != FORMAT:
        raise UnsupportedFormat(f"fmt is {obj.get('fmt')!r}, not {FORMAT!r}")
    stmt = obj.get("attStmt")
    if not isinstance(stmt, dict) or not isinstance(stmt.get("x5c"), list):
        raise MalformedEvidence("attStmt has no x5c array")
    raw_auth_data = obj.get("authData")
    if not isinstance(raw_auth_data, bytes):
        raise MalformedEvidence("authData is not a byte string")
    auth_data = _auth_data(raw_auth_data)

    # App Attest step 1: x5c is credCert then intermediate; it chains to Apple's root, at now
    valid = validate_path(stmt["x5c"], trust.apple_app_attest_roots, now)
    cred_cert = valid.leaf.cert

    # App Attest steps 2-4: nonce = SHA256(authData || clientDataHash) equals the credCert
    # extension 1.2.840.113635.100.8.2
    nonce = hashlib.sha256(raw_auth_data + client_data_hash).digest()
    if not hmac.compare_digest(_cert_nonce(cred_cert), nonce):
        raise ChallengeMismatch("credCert nonce is not SHA256(authData || clientDataHash)")

    # App Attest step 5: SHA256(credCert public key) equals the key identifier
    point = _uncompressed_point(cred_cert)
    if not hmac.compare_digest(hashlib.sha256(point).digest(), key_id):
        raise KeyMismatch("SHA256 of the credCert key is not the key identifier")

    # App Attest step 6: rpIdHash equals SHA256(TeamID.BundleID)
    if not hmac.compare_digest(auth_data.rp_id_hash, hashlib.sha256(app.app_id.encode()).digest()):
        raise RpIdMismatch(f"rpIdHash is not SHA256({app.app_id!r})")

    # App Attest step 7: the counter is 0
    if auth_data.counter != 0:
        raise CounterNotIncreasing(f"attestation counter is {auth_data.counter}, not 0")

    # App Attest step 8: aaguid is appattest (production) or appattestdevelop (if allowed)
    aaguid = auth_data.aaguid
    if aaguid == AAGUID_PRODUCTION:
        environment = "production"
    elif aaguid == AAGUID_DEVELOPMENT and app.allow_development:
        environment = "development"
    else:
        raise AaguidMismatch(f"aaguid {aaguid!r} is not an accepted App Attest environment")

    # App Attest step 9: credentialId equals the key identifier
    if not hmac.compare_digest(auth_data.credential_id, key_id):
        raise KeyMismatch("credentialId is not the key identifier")
    # WebAuthn §8.8 (apple): the credential public key is the credCert key
    cose = auth_data.cose_key
    if not (cose.get(1) == 2 and cose.get(-1) == 1) or not hmac.compare_digest(
        b"\x04" + _as_bytes(cose.get(-2)) + _as_bytes(cose.get(-3)), point
    ):
        raise KeyMismatch("credential public key is not the credCert key")

    return AttestationResult(
        format=FORMAT,
        public_key=valid.leaf.key,
        security_level=SecurityLevel.SECURE_ENCLAVE,
        device=DeviceFacts(aaguid=aaguid, environment=environment),
        app=AttestedApp(team_id=app.team_id, bundle_id=app.bundle_id),
        trust_path=valid.path_der,
        warnings=("app-attest-development-environment",) if environment == "development" else (),
        credential_id=auth_data.credential_id,
        sign_count=0,
    )


@dataclass(frozen=True)
class AssertionResult:
    """A verified App Attest assertion; store ``sign_count`` as the key's new counter."""

    sign_count: int


def verify_app_attest_assertion(
    assertion: bytes,
    *,
    client_data: bytes,
    public_key: bytes,
    app: AppleApp,
    previous_sign_count: int,
) -> AssertionResult:
    """Verify an App Attest assertion made with a key attested earlier.

    ``public_key`` is the SPKI DER stored from the attestation (``AttestationResult.public_key``);
    ``client_data`` is the request payload the app hashed (it must embed the server challenge,
    which the caller checks).
    """
    obj = _decode_cbor_map(assertion, "assertion")
    signature = obj.get("signature")
    raw_auth_data = obj.get("authenticatorData")
    if not isinstance(signature, bytes) or not isinstance(raw_auth_data, bytes):
        raise MalformedEvidence("assertion lacks signature or authenticatorData")
    # Apple sets the AT flag in assertion authenticator data without attested credential data,
    # so it is read as WebAuthn §6.1 fixed fields (rpIdHash 32, flags 1, signCount 4) by hand.
    if len(raw_auth_data) < 37:
        raise MalformedEvidence("assertion authenticatorData is shorter than 37 bytes")
    rp_id_hash, counter = raw_auth_data[:32], int.from_bytes(raw_auth_data[33:37], "big")
    try:
        key = load_der_public_key(public_key)
    except ValueError as e:
        raise MalformedEvidence(f"stored public key is not SPKI DER: {e}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyMismatch("stored public key is not an EC key")

    # App Attest assertion steps 1-3: nonce = SHA256(authenticatorData || SHA256(clientData));
    # the signature is ECDSA-SHA256 over nonce by the attested key
    nonce = hashlib.sha256(raw_auth_data + hashlib.sha256(client_data).digest()).digest()
    try:
        key.verify(signature, nonce, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureInvalid("assertion signature does not verify over nonce") from None

    # App Attest assertion step 4: rpIdHash equals SHA256(TeamID.BundleID)
    if not hmac.compare_digest(rp_id_hash, hashlib.sha256(app.app_id.encode()).digest()):
        raise RpIdMismatch(f"rpIdHash is not SHA256({app.app_id!r})")

    # App Attest assertion step 5: the counter is strictly greater than the stored one
    if counter <= previous_sign_count:
        raise CounterNotIncreasing(f"counter {counter} <= stored {previous_sign_count}")
    return AssertionResult(sign_count=counter)
