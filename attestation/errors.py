"""One exception per attestation property that can fail.

Every class names the property it guards (``prop``) and carries a short, client-safe
``description``; the constructor argument is the debug detail for logs and audit records
(fosite's hint vs debug). Mapping to HTTP happens at the edge, never here.
"""

from __future__ import annotations

from typing import ClassVar


class AttestationError(Exception):
    """Base class: the evidence does not prove what it must."""

    prop: ClassVar[str] = "attestation"
    description: ClassVar[str] = "the attestation could not be verified"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.description)
        self.detail = detail or self.description

    def __str__(self) -> str:
        return f"{self.prop}: {self.detail}"


class MalformedEvidence(AttestationError):
    prop = "encoding"
    description = "the attestation is not well-formed"


class UnsupportedFormat(AttestationError):
    prop = "format"
    description = "the attestation format is not supported"


class ChallengeMismatch(AttestationError):
    prop = "challenge"
    description = "the attestation is not bound to this enrolment's challenge"


class SecurityLevelTooLow(AttestationError):
    prop = "security_level"
    description = "the key is not protected by secure hardware"


class KeyNotGenerated(AttestationError):
    prop = "origin"
    description = "the key was not generated inside the secure hardware"


class BootStateUnverified(AttestationError):
    prop = "verified_boot_state"
    description = "the device did not boot a verified operating system"


class DeviceUnlocked(AttestationError):
    prop = "device_locked"
    description = "the device's bootloader is unlocked"


class AppIdMismatch(AttestationError):
    prop = "app_id"
    description = "the key was not created by the expected app"


class RpIdMismatch(AttestationError):
    prop = "rp_id_hash"
    description = "the attestation was made for another relying party or app"


class AaguidMismatch(AttestationError):
    prop = "aaguid"
    description = "the authenticator model or environment is not the expected one"


class KeyMismatch(AttestationError):
    prop = "public_key"
    description = "the attested key is not the credential's key"


class CounterNotIncreasing(AttestationError):
    prop = "sign_count"
    description = "the signature counter did not increase"


class SignatureInvalid(AttestationError):
    prop = "signature"
    description = "a signature in the attestation does not verify"


class CertificateExpired(AttestationError):
    prop = "validity"
    description = "a certificate in the chain is outside its validity period"


class CertificateRevoked(AttestationError):
    prop = "revocation"
    description = "a certificate in the chain has been revoked"


class ChainInvalid(AttestationError):
    prop = "certificate_chain"
    description = "the certificate chain violates path constraints"


class UntrustedRoot(AttestationError):
    prop = "trust_anchor"
    description = "the certificate chain does not end at a trusted root"


class AuthenticatorRevoked(AttestationError):
    prop = "authenticator_status"
    description = "the authenticator model is marked as compromised"


class UserNotPresent(AttestationError):
    prop = "flags"
    description = "the authenticator data flags are not acceptable"
