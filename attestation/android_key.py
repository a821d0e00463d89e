"""Android Key Attestation: a KeyMint/Keymaster certificate chain → ``AttestationResult``.

Spec: https://source.android.com/docs/security/features/keystore/attestation (KeyDescription
schema, tags from ``hardware/interfaces/security/keymint/aidl/.../Tag.aidl``) and
https://developer.android.com/privacy-and-security/security-key-attestation (chain, roots and
the revocation status list). fido2 has no Android Key verifier, so the ASN.1 is parsed here
with asn1crypto.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asn1crypto import core, parser
from cryptography import x509

from .asn1 import AttestationApplicationIdSchema, KeyDescriptionSchema, RootOfTrustSchema
from .chain import validate_path
from .config import AndroidApp, RevocationList, TrustStore
from .errors import (
    AppIdMismatch,
    AttestationError,
    BootStateUnverified,
    CertificateRevoked,
    ChallengeMismatch,
    DeviceUnlocked,
    KeyNotGenerated,
    MalformedEvidence,
    SecurityLevelTooLow,
)
from .result import AttestationResult, AttestedApp, DeviceFacts, SecurityLevel

KEY_DESCRIPTION_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.1.17")
FORMAT = "android-key"

# KeyMint Tag numbers (tag & 0x0FFFFFFF), as used for the AuthorizationList context tags.
TAG_ORIGIN = 702
TAG_ROOT_OF_TRUST = 704
TAG_OS_VERSION = 705
TAG_OS_PATCHLEVEL = 706
TAG_ATTESTATION_APPLICATION_ID = 709
TAG_ATTESTATION_ID_MODEL = 717
TAG_VENDOR_PATCHLEVEL = 718
TAG_BOOT_PATCHLEVEL = 719
KM_ORIGIN_GENERATED = 0

_SECURITY_LEVELS = {0: SecurityLevel.SOFTWARE, 1: SecurityLevel.TEE, 2: SecurityLevel.STRONGBOX}
_RANK = {SecurityLevel.SOFTWARE: 0, SecurityLevel.TEE: 1, SecurityLevel.STRONGBOX: 2}
_BOOT_STATES = {0: "verified", 1: "self-signed", 2: "unverified", 3: "failed"}


@dataclass(frozen=True)
class KeyDescription:
    """The parts of the KeyDescription extension cityid decides on."""

    attestation_version: int
    attestation_security_level: int
    keymint_version: int
    keymint_security_level: int
    challenge: bytes
    software_enforced: Mapping[int, bytes]  # tag -> DER of the explicitly tagged value
    hardware_enforced: Mapping[int, bytes]


def _tagged(value: core.Any) -> dict[int, bytes]:
    """An AuthorizationList as {tag: DER of the explicitly tagged value}; unknown tags kept."""
    cls, method, tag, _, data, _ = parser.parse(value.dump(), strict=True)
    if (cls, method, tag) != (0, 1, 16):
        raise MalformedEvidence("AuthorizationList is not a SEQUENCE")
    out: dict[int, bytes] = {}
    ptr = 0
    while ptr < len(data):
        size = parser.peek(data[ptr:])
        cls, method, tag, _, inner, _ = parser.parse(data[ptr : ptr + size], strict=True)
        ptr += size
        if cls != 2 or method != 1:  # [tag] EXPLICIT, context-specific and constructed
            raise MalformedEvidence("AuthorizationList entry is not an explicit context tag")
        if tag in out:
            raise MalformedEvidence(f"AuthorizationList tag {tag} repeated")
        out[tag] = bytes(inner)
    return out


def parse_key_description(der: bytes) -> KeyDescription:
    """Parse the KeyDescription extension value (any parsing failure is MalformedEvidence)."""
    try:
        kd = KeyDescriptionSchema.load(der, strict=True)
        version = kd["attestationVersion"].native
        att_level = kd["attestationSecurityLevel"].native
        km_version = kd["keyMintVersion"].native
        km_level = kd["keyMintSecurityLevel"].native
        challenge = kd["attestationChallenge"].native
        sw = _tagged(kd["softwareEnforced"])
        hw = _tagged(kd["hardwareEnforced"])
    except AttestationError:
        raise
    except Exception as e:  # noqa: BLE001 - asn1crypto raises many types on hostile input
        raise MalformedEvidence(f"KeyDescription is not valid DER: {type(e).__name__}") from None
    if not all(isinstance(v, int) for v in (version, km_version, att_level, km_level)):
        raise MalformedEvidence("KeyDescription versions are not integers")
    if not isinstance(challenge, bytes):
        raise MalformedEvidence("attestationChallenge is not an OCTET STRING")
    return KeyDescription(version, att_level, km_version, km_level, challenge, sw, hw)


def _load(spec: type[core.Asn1Value], raw: bytes, what: str) -> Any:
    try:
        return spec.load(raw, strict=True).native
    except Exception as e:  # noqa: BLE001 - asn1crypto raises many types on hostile input
        raise MalformedEvidence(f"{what} is not valid DER: {type(e).__name__}") from None


def _int_tag(auth: Mapping[int, bytes], tag: int) -> int | None:
    raw = auth.get(tag)
    if raw is None:
        return None
    value = _load(core.Integer, raw, f"tag {tag}")
    if not isinstance(value, int):
        raise MalformedEvidence(f"tag {tag} is not an INTEGER")
    return value


def _root_of_trust(raw: bytes) -> tuple[bool, int]:
    try:
        rot = RootOfTrustSchema.load(raw, strict=True)
        locked = rot["deviceLocked"].native
        state = rot["verifiedBootState"].native
    except AttestationError:
        raise
    except Exception as e:  # noqa: BLE001 - asn1crypto raises many types on hostile input
        raise MalformedEvidence(f"RootOfTrust is not valid DER: {type(e).__name__}") from None
    if not isinstance(locked, bool) or not isinstance(state, int):
        raise MalformedEvidence("RootOfTrust.deviceLocked is not a BOOLEAN")
    return locked, state


def _application_id(raw: bytes) -> tuple[tuple[str, ...], tuple[bytes, ...]]:
    inner = _load(core.OctetString, raw, "attestationApplicationId")
    try:
        app = AttestationApplicationIdSchema.load(inner, strict=True)
        names = tuple(bytes(p["package_name"].native).decode() for p in app["package_infos"])
        digests = tuple(bytes(d.native) for d in app["signature_digests"])
    except Exception as e:  # noqa: BLE001 - asn1crypto raises many types on hostile input
        detail = f"AttestationApplicationId is invalid: {type(e).__name__}"
        raise MalformedEvidence(detail) from None
    return names, digests


def _revocation_warnings(
    path: Sequence[x509.Certificate],
    status: RevocationList | None,
    trust: TrustStore,
    now: datetime,
) -> tuple[str, ...]:
    # developer.android.com security-key-attestation "Certificate revocation status list":
    # every certificate of the chain is looked up by serial number.
    if status is None:
        return ("android-revocation-list-missing",)
    for cert in path:
        entry = status.entries.get(cert.serial_number)
        if entry is not None:  # REVOKED or SUSPENDED: neither may be trusted
            raise CertificateRevoked(
                f"{cert.subject.rfc4514_string()!r} serial {cert.serial_number:x}: "
                f"{entry.status} ({entry.reason or 'no reason'})"
            )
    age = now - status.fetched_at
    if age > trust.revocation_max_age:
        return (f"android-revocation-list-stale: fetched {status.fetched_at:%Y-%m-%dT%H:%M:%SZ}",)
    return ()


def verify_android_key(
    chain_der: Sequence[bytes],
    *,
    challenge: bytes,
    app: AndroidApp,
    trust: TrustStore,
    now: datetime,
) -> AttestationResult:
    """Verify an Android Key Attestation certificate chain (leaf first) for ``app``."""
    # RFC 5280 §6.1 + Android attestation "Verify the chain": to a Google root, at now
    valid = validate_path(chain_der, trust.google_roots, now)
    leaf = valid.leaf.cert

    # Android KeyDescription: the attestation extension is in the leaf, and only there
    # (chains signed by an app-held ATTEST_KEY carry a second record and are not accepted)
    if KEY_DESCRIPTION_OID.dotted_string not in valid.leaf.extension_oids:
        raise MalformedEvidence("leaf has no KeyDescription extension")
    if any(KEY_DESCRIPTION_OID.dotted_string in c.extension_oids for c in valid.chain[1:]):
        raise MalformedEvidence("KeyDescription in a non-leaf certificate (attest-key chain)")
    ext = leaf.extensions.get_extension_for_oid(KEY_DESCRIPTION_OID)

    # Android attestation status list: no certificate of the path is revoked or suspended
    path = [p.cert for p in valid.path]
    warnings = _revocation_warnings(path, trust.android_revocations, trust, now)

    if not isinstance(ext.value, x509.UnrecognizedExtension):
        raise MalformedEvidence("extension value is not an OCTET STRING payload")
    kd = parse_key_description(ext.value.value)
    hw, sw = kd.hardware_enforced, kd.software_enforced

    # Android KeyDescription: attestationChallenge equals the server's challenge
    if not hmac.compare_digest(kd.challenge, challenge):
        raise ChallengeMismatch("attestationChallenge differs from the enrolment challenge")

    # Android KeyDescription: attestationSecurityLevel and keyMintSecurityLevel are hardware
    att_level = _SECURITY_LEVELS.get(kd.attestation_security_level)
    km_level = _SECURITY_LEVELS.get(kd.keymint_security_level)
    if att_level is None or km_level is None:
        raise MalformedEvidence("unknown SecurityLevel value")
    level = min(att_level, km_level, key=_RANK.__getitem__)
    if _RANK[level] < _RANK[app.min_security_level]:
        raise SecurityLevelTooLow(
            f"attestation {att_level}, keyMint {km_level}; need {app.min_security_level}"
        )

    # Android AuthorizationList: hardwareEnforced.origin is GENERATED
    if _int_tag(hw, TAG_ORIGIN) != KM_ORIGIN_GENERATED:
        raise KeyNotGenerated("hardwareEnforced origin is not GENERATED")

    # Android RootOfTrust (hardwareEnforced): verifiedBootState Verified, deviceLocked TRUE
    rot_raw = hw.get(TAG_ROOT_OF_TRUST)
    if rot_raw is None:
        raise BootStateUnverified("hardwareEnforced has no rootOfTrust")
    locked, boot_state = _root_of_trust(rot_raw)
    if boot_state != 0:
        state_name = _BOOT_STATES.get(boot_state, str(boot_state))
        raise BootStateUnverified(f"verifiedBootState is {state_name}")
    if not locked:
        raise DeviceUnlocked("rootOfTrust.deviceLocked is FALSE")

    # Android AuthorizationList: attestationApplicationId names the city app and its signer
    app_raw = sw.get(TAG_ATTESTATION_APPLICATION_ID) or hw.get(TAG_ATTESTATION_APPLICATION_ID)
    if app_raw is None:
        raise AppIdMismatch("no attestationApplicationId")
    packages, digests = _application_id(app_raw)
    if set(packages) != {app.package_name}:
        raise AppIdMismatch(f"package {sorted(packages)!r} is not {app.package_name!r}")
    if not digests or not all(
        any(hmac.compare_digest(d, want) for want in app.signing_cert_digests) for d in digests
    ):
        raise AppIdMismatch("signing certificate digest is not the city app's")

    model_raw = hw.get(TAG_ATTESTATION_ID_MODEL)
    model = _load(core.OctetString, model_raw, "attestationIdModel") if model_raw else None
    return AttestationResult(
        format=FORMAT,
        public_key=valid.leaf.key,
        security_level=level,
        device=DeviceFacts(
            verified_boot_state=_BOOT_STATES[boot_state],
            device_locked=locked,
            os_version=_int_tag(hw, TAG_OS_VERSION),
            os_patch_level=_int_tag(hw, TAG_OS_PATCHLEVEL),
            vendor_patch_level=_int_tag(hw, TAG_VENDOR_PATCHLEVEL),
            boot_patch_level=_int_tag(hw, TAG_BOOT_PATCHLEVEL),
            model=bytes(model).decode(errors="replace") if isinstance(model, bytes) else None,
        ),
        app=AttestedApp(package=packages[0], signing_cert_digests=digests),
        trust_path=valid.path_der,
        warnings=warnings,
    )
