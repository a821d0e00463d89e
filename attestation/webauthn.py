"""WebAuthn attestation (packed, tpm, fido-u2f, apple, none) on top of ``fido2``.

fido2 checks each statement's signature and certificate requirements; this module adds what it
leaves undone (WebAuthn Level 2 §7.1 registration steps and §8 formats): certificate validity
and path constraints through ``chain.validate_path``, trust anchors by AAGUID from a FIDO MDS3
blob, the apple format's credCert-key = credential-key rule, and typed errors.

Plugging into ``fido2.server.Fido2Server``::

    hook = Fido2AttestationHook(trust.webauthn, rp, clock=lambda: datetime.now(UTC))
    server = Fido2Server(rp_entity, verify_attestation=hook)

``Fido2Server.register_complete`` then calls ``hook(attestation_object, client_data_hash)``,
which raises an ``AttestationError`` subclass on failure (Fido2Server has already checked the
client data and RP ID hash). Use ``verify_webauthn`` directly to get the ``AttestationResult``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from base64 import b64decode
from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fido2 import mds3
from fido2.attestation.base import (
    Attestation,
    InvalidData,
    InvalidSignature,
    UnsupportedAttestation,
)
from fido2.attestation.tpm import TpmAttestationFormat, TpmPublicFormat
from fido2.cose import CoseKey
from fido2.utils import websafe_decode
from fido2.webauthn import AttestationObject

from .chain import AnchorSet, load_der_chain, spki, validate_path
from .config import RelyingParty, WebAuthnTrust
from .cose import cose_to_spki
from .errors import (
    AaguidMismatch,
    AuthenticatorRevoked,
    ChallengeMismatch,
    KeyMismatch,
    MalformedEvidence,
    RpIdMismatch,
    SignatureInvalid,
    UnsupportedFormat,
    UntrustedRoot,
    UserNotPresent,
)
from .result import AttestationResult, AttestedApp, DeviceFacts, SecurityLevel

FORMATS = ("packed", "tpm", "fido-u2f", "apple", "none")
APPLE_NONCE_OID = x509.ObjectIdentifier("1.2.840.113635.100.8.2")
FIDO_AAGUID_OID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")
_BAD_STATUSES = frozenset(
    {
        "REVOKED",
        "USER_VERIFICATION_BYPASS",
        "ATTESTATION_KEY_COMPROMISE",
        "USER_KEY_REMOTE_COMPROMISE",
        "USER_KEY_PHYSICAL_COMPROMISE",
    }
)


def _parse(attestation_object: bytes) -> AttestationObject:
    if isinstance(attestation_object, AttestationObject):
        return attestation_object
    if not isinstance(attestation_object, bytes | bytearray) or not attestation_object:
        raise MalformedEvidence("attestation object is empty")
    try:
        return AttestationObject(bytes(attestation_object))
    except Exception as e:  # noqa: BLE001 - fido2 raises many types on hostile input
        raise MalformedEvidence(f"attestation object is invalid: {type(e).__name__}") from None


def _statement_certs(stmt: Mapping[str, Any]) -> list[x509.Certificate]:
    x5c = stmt.get("x5c")
    if not isinstance(x5c, list):
        raise MalformedEvidence("attStmt.x5c is not an array")
    return load_der_chain(x5c)


def _precheck_apple(stmt: Mapping[str, Any], auth_data: bytes, cdh: bytes, cred_spki: bytes) -> None:
    cert = _statement_certs(stmt)[0]
    try:
        ext = cert.extensions.get_extension_for_oid(APPLE_NONCE_OID)
    except (x509.ExtensionNotFound, ValueError):
        raise MalformedEvidence("credCert has no nonce extension") from None
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        raise MalformedEvidence("extension value is not an OCTET STRING payload")
    # WebAuthn L2 §8.8 steps 2-4: nonce = SHA256(authenticatorData || clientDataHash)
    if not ext.value.value.endswith(hashlib.sha256(auth_data + cdh).digest()):
        raise ChallengeMismatch("credCert nonce is not SHA256(authData || clientDataHash)")
    # WebAuthn L2 §8.8 step 5: credCert public key equals credentialPublicKey
    if not hmac.compare_digest(spki(cert), cred_spki):
        raise KeyMismatch("credCert key is not the credential public key")


def _precheck_packed(stmt: Mapping[str, Any], aaguid: bytes) -> None:
    if "x5c" not in stmt:
        return
    cert = _statement_certs(stmt)[0]
    try:
        ext = cert.extensions.get_extension_for_oid(FIDO_AAGUID_OID)
    except x509.ExtensionNotFound:
        return
    except ValueError as e:
        raise MalformedEvidence(f"attestation certificate extensions: {e}") from None
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        raise MalformedEvidence("extension value is not an OCTET STRING payload")
    # WebAuthn L2 §8.2.1: id-fido-gen-ce-aaguid equals the aaguid in authenticatorData
    if ext.value.value[-16:] != aaguid or len(ext.value.value) != 18:
        raise AaguidMismatch("certificate AAGUID extension differs from authenticatorData")


def _precheck_tpm(stmt: Mapping[str, Any], auth_data: bytes, cdh: bytes, cred_spki: bytes) -> None:
    try:
        pub_area = TpmPublicFormat.parse(stmt["pubArea"])
        pub_spki = pub_area.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        cert_info = TpmAttestationFormat.parse(stmt["certInfo"])
        hash_alg = CoseKey.for_alg(stmt["alg"])._HASH_ALG  # type: ignore[attr-defined]
    except Exception as e:  # noqa: BLE001 - fido2 raises many types on hostile input
        raise MalformedEvidence(f"TPM statement is invalid: {type(e).__name__}") from None
    # WebAuthn L2 §8.3 step 2: pubArea key equals credentialPublicKey
    if not hmac.compare_digest(pub_spki, cred_spki):
        raise KeyMismatch("TPM pubArea key is not the credential public key")
    # WebAuthn L2 §8.3 step 4: certInfo.extraData = hash(authenticatorData || clientDataHash)
    digest = hashlib.new(hash_alg.name, auth_data + cdh).digest()
    if not hmac.compare_digest(bytes(cert_info.data), digest):
        raise ChallengeMismatch("TPM extraData is not the hash of authData || clientDataHash")


def _run_fido2(fmt: str, stmt: Mapping[str, Any], obj: AttestationObject, cdh: bytes) -> None:
    verifier = Attestation.for_type(fmt)()
    if isinstance(verifier, UnsupportedAttestation):
        raise UnsupportedFormat(f"attestation format {fmt!r} is not supported")
    try:
        verifier.verify(stmt, obj.auth_data, cdh)
    except InvalidSignature as e:
        raise SignatureInvalid(f"{fmt} statement signature: {e}") from None
    except InvalidData as e:
        raise MalformedEvidence(f"{fmt} statement: {e}") from None
    except NotImplementedError as e:
        raise UnsupportedFormat(f"{fmt}: {e}") from None
    except Exception as e:  # noqa: BLE001 - fido2 raises many types on hostile input
        raise MalformedEvidence(f"{fmt} statement is invalid: {type(e).__name__}") from None


def _anchors_for(fmt: str, aaguid: bytes, certs: list[x509.Certificate], trust: WebAuthnTrust) -> AnchorSet:
    if aaguid != b"\x00" * 16:
        # FIDO MDS3 §3.1.7: compromised authenticator models are refused
        if aaguid in trust.compromised_aaguids:
            raise AuthenticatorRevoked(f"AAGUID {aaguid.hex()} has a compromise status report")
        anchors = trust.roots_by_aaguid.get(aaguid)
        if anchors is not None:
            return anchors
    by_format = trust.roots_by_format.get(fmt)
    if by_format is not None:
        return by_format
    # FIDO MDS3: U2F authenticators are found by attestationCertificateKeyIdentifier
    for cert in certs:
        ski = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
        anchors = trust.roots_by_aaguid.get(ski)
        if anchors is not None:
            return anchors
    raise UntrustedRoot(f"no trust anchors for AAGUID {aaguid.hex()} / format {fmt!r}")


def verify_webauthn(
    attestation_object: bytes | AttestationObject,
    client_data_hash: bytes,
    *,
    rp: RelyingParty | None,
    trust: WebAuthnTrust,
    now: datetime,
) -> AttestationResult:
    """Verify a WebAuthn attestation object for ``client_data_hash`` (SHA-256 of
    clientDataJSON, whose type, challenge and origin the caller has checked)."""
    obj = _parse(attestation_object)
    auth = obj.auth_data
    fmt = obj.fmt
    stmt = obj.att_stmt
    if not isinstance(fmt, str) or not isinstance(stmt, Mapping):
        raise MalformedEvidence("attestation object lacks fmt or attStmt")

    # WebAuthn L2 §7.1 step 13: rpIdHash is SHA-256 of the RP ID
    if rp is not None and not hmac.compare_digest(
        auth.rp_id_hash, hashlib.sha256(rp.rp_id.encode()).digest()
    ):
        raise RpIdMismatch(f"rpIdHash is not SHA256({rp.rp_id!r})")
    # WebAuthn L2 §7.1 step 14: the User Present flag is set
    if not auth.is_user_present():
        raise UserNotPresent("UP flag is not set")
    cred = auth.credential_data
    if cred is None:
        raise MalformedEvidence("authenticatorData has no attested credential data")
    cred_spki = cose_to_spki(cred.public_key)
    aaguid = bytes(cred.aaguid)

    # WebAuthn L2 §7.1 step 18-19: verify the statement per its format (§8), typed first
    if fmt not in FORMATS:
        raise UnsupportedFormat(f"attestation format {fmt!r} is not supported")
    if fmt == "apple":
        _precheck_apple(stmt, bytes(auth), client_data_hash, cred_spki)
    elif fmt == "packed":
        _precheck_packed(stmt, aaguid)
    elif fmt == "tpm":
        _precheck_tpm(stmt, bytes(auth), client_data_hash, cred_spki)
    _run_fido2(fmt, stmt, obj, client_data_hash)

    device = DeviceFacts(aaguid=aaguid)
    app = AttestedApp(rp_id=rp.rp_id if rp is not None else None)
    if fmt == "none" or "x5c" not in stmt:
        # WebAuthn L2 §8.2 self attestation / §8.7 none: no hardware claim can be trusted
        return AttestationResult(
            format=fmt,
            public_key=cred_spki,
            security_level=SecurityLevel.SOFTWARE,
            device=device,
            app=app,
            trust_path=(),
            warnings=("webauthn-unattested",),
            credential_id=bytes(cred.credential_id),
            sign_count=auth.counter,
        )

    # WebAuthn L2 §7.1 step 20-21: the trust path ends at an anchor for this authenticator
    certs = _statement_certs(stmt)
    for cert in certs:
        if cert.public_bytes(Encoding.DER) in trust.compromised_certificates:
            raise AuthenticatorRevoked("attestation certificate is marked compromised (MDS3)")
    anchors = _anchors_for(fmt, aaguid, certs, trust)
    valid = validate_path(stmt["x5c"], anchors, now)

    if fmt == "tpm":
        level = SecurityLevel.TPM
    elif fmt == "apple":
        level = SecurityLevel.SECURE_ENCLAVE
    elif set(trust.key_protection_by_aaguid.get(aaguid, ())) == {"software"}:
        level = SecurityLevel.SOFTWARE
    else:
        level = SecurityLevel.SECURITY_KEY
    warnings: tuple[str, ...] = ()
    if trust.mds_next_update is not None and now.date() > trust.mds_next_update:
        warnings = (f"fido-mds-stale: nextUpdate {trust.mds_next_update.isoformat()}",)
    return AttestationResult(
        format=fmt,
        public_key=cred_spki,
        security_level=level,
        device=device,
        app=app,
        trust_path=valid.path_der,
        warnings=warnings,
        credential_id=bytes(cred.credential_id),
        sign_count=auth.counter,
    )


def check_client_data(client_data_json: bytes, *, challenge: bytes, rp: RelyingParty) -> bytes:
    """WebAuthn L2 §7.1 steps 5-11 for registration; returns clientDataHash."""
    try:
        data = json.loads(client_data_json)
        kind, got, origin = data["type"], websafe_decode(data["challenge"]), data["origin"]
    except Exception as e:  # noqa: BLE001 - hostile JSON
        raise MalformedEvidence(f"clientDataJSON is invalid: {type(e).__name__}") from None
    # step 7: type is webauthn.create
    if kind != "webauthn.create":
        raise MalformedEvidence(f"clientData type is {kind!r}")
    # step 8: challenge equals the one sent for this ceremony
    if not hmac.compare_digest(got, challenge):
        raise ChallengeMismatch("clientData challenge differs")
    # step 9: origin is one the RP expects
    if origin not in rp.origins:
        raise RpIdMismatch(f"clientData origin {origin!r} is not expected")
    return hashlib.sha256(client_data_json).digest()


def load_mds3(
    blob: bytes,
    *,
    mds_root: x509.Certificate,
    now: datetime,
    extra_format_roots: Mapping[str, AnchorSet] | None = None,
) -> WebAuthnTrust:
    """Trust anchors from a FIDO MDS3 blob (the JWT as downloaded), verified to ``mds_root``
    with validity and path constraints at ``now``; compromised models are remembered."""
    try:
        header = json.loads(websafe_decode(blob.split(b".")[0]))
        x5c = [b64decode(c) for c in header.get("x5c", [])]
    except Exception as e:  # noqa: BLE001 - hostile input
        raise MalformedEvidence(f"MDS3 blob header is invalid: {type(e).__name__}") from None
    # FIDO MDS3 §3.2: the signing chain goes to the FIDO root, checked fully here
    validate_path(x5c, AnchorSet([mds_root]), now)
    try:
        payload = mds3.parse_blob(blob, mds_root.public_bytes(Encoding.DER))
    except Exception as e:  # noqa: BLE001 - fido2 raises many types on hostile input
        raise SignatureInvalid(f"MDS3 blob signature: {type(e).__name__}: {e}") from None
    roots: dict[bytes, AnchorSet] = {}
    protection: dict[bytes, tuple[str, ...]] = {}
    compromised: set[bytes] = set()
    compromised_certs: set[bytes] = set()
    for entry in payload.entries:
        statuses = {str(r.status) for r in entry.status_reports}
        keys = [bytes(entry.aaguid)] if entry.aaguid else []
        keys += list(entry.attestation_certificate_key_identifiers or [])
        # FIDO MDS3 §3.1.4 ATTESTATION_KEY_COMPROMISE: with `certificate`, only attestations
        # chaining to that certificate are refused; without one, every new registration of the
        # model is (the leaked key could sign any attestation).
        whole_model = False
        for report in entry.status_reports:
            if str(report.status) == "ATTESTATION_KEY_COMPROMISE":
                if report.certificate:
                    compromised_certs.add(bytes(report.certificate))
                else:
                    whole_model = True
        if whole_model or statuses & (_BAD_STATUSES - {"ATTESTATION_KEY_COMPROMISE"}):
            compromised.update(k for k in keys if len(k) == 16)
            continue
        statement = entry.metadata_statement
        if statement is None:
            continue
        anchors = AnchorSet(
            x509.load_der_x509_certificate(bytes(der)) for der in statement.attestation_root_certificates
        )
        for k in keys:
            roots[k] = anchors
            protection[k] = tuple(statement.key_protection)
    return WebAuthnTrust(
        roots_by_aaguid=MappingProxyType(roots),
        roots_by_format=MappingProxyType(dict(extra_format_roots or {})),
        key_protection_by_aaguid=MappingProxyType(protection),
        compromised_aaguids=frozenset(compromised),
        compromised_certificates=frozenset(compromised_certs),
        mds_next_update=payload.next_update,
    )


class Fido2AttestationHook:
    """A ``verify_attestation`` callable for ``fido2.server.Fido2Server`` (see module doc)."""

    def __init__(self, trust: WebAuthnTrust, rp: RelyingParty, *, clock: Callable[[], datetime]) -> None:
        self._trust = trust
        self._rp = rp
        self._clock = clock

    def __call__(self, attestation_object: AttestationObject, client_data_hash: bytes) -> None:
        verify_webauthn(
            attestation_object, client_data_hash, rp=self._rp, trust=self._trust, now=self._clock()
        )
