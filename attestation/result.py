"""The one normalised outcome of every verifier: a frozen ``AttestationResult``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SecurityLevel(StrEnum):
    """Where the attested private key lives, weakest first."""

    SOFTWARE = "software"
    TEE = "tee"
    STRONGBOX = "strongbox"
    SECURE_ENCLAVE = "secure-enclave"
    TPM = "tpm"
    SECURITY_KEY = "security-key"


@dataclass(frozen=True)
class DeviceFacts:
    """What the evidence says about the device; ``None`` where the format is silent."""

    verified_boot_state: str | None = None  # verified / self-signed / unverified / failed
    device_locked: bool | None = None
    os_version: int | None = None  # Android: e.g. 130000 for 13.0.0
    os_patch_level: int | None = None  # YYYYMM
    vendor_patch_level: int | None = None  # YYYYMMDD
    boot_patch_level: int | None = None  # YYYYMMDD
    aaguid: bytes | None = None
    model: str | None = None
    environment: str | None = None  # App Attest: production / development


@dataclass(frozen=True)
class AttestedApp:
    """The app (or relying party) the key was created for, as the evidence states it."""

    package: str | None = None  # Android package name
    signing_cert_digests: tuple[bytes, ...] = ()  # SHA-256 of the APK signing certificates
    team_id: str | None = None  # Apple Team ID
    bundle_id: str | None = None  # Apple bundle ID
    rp_id: str | None = None  # WebAuthn relying party id


@dataclass(frozen=True)
class AttestationResult:
    """A verified attestation, reduced to what cityid decides on."""

    format: str  # android-key / apple-appattest / packed / tpm / fido-u2f / apple / none
    public_key: bytes  # attested key, SubjectPublicKeyInfo DER
    security_level: SecurityLevel
    device: DeviceFacts
    app: AttestedApp
    trust_path: tuple[bytes, ...]  # certificates DER, leaf first, trust anchor last
    warnings: tuple[str, ...] = ()
    credential_id: bytes | None = None  # WebAuthn credential id / App Attest key id
    sign_count: int | None = None
