"""Which level a device key may help reach, from what its attestation proved."""

from __future__ import annotations

from dataclasses import dataclass

from policies.levels import Level, Reason

# Security levels the attestation layer reports. Hardware-backed: the private key never leaves
# a TEE, StrongBox, Secure Enclave, TPM or a security key.
SOFTWARE = "software"
HARDWARE_SECURITY_LEVELS = frozenset({"tee", "strongbox", "secure-enclave", "tpm", "security-key"})


@dataclass(frozen=True)
class DeviceAttestationFacts:
    """What attestation proved about a device key.

    ``verified_boot`` and ``device_locked`` are the Android Key Attestation RootOfTrust values
    (verifiedBootState == Verified, deviceLocked); formats without such a notion (App Attest,
    TPM, security keys) pass True. ``warnings`` are the attestation layer's non-fatal findings.
    """

    security_level: str
    verified_boot: bool
    device_locked: bool
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceAssessment:
    """``max_level`` None: the device must not be enrolled at all."""

    max_level: Level | None
    reason: Reason


def assess_device(facts: DeviceAttestationFacts) -> DeviceAssessment:
    """The highest level a signature by this device key may contribute to.

    Never high: high needs the German eID card (eIDAS 2015/1502 Annex 2.2.1; ARCHITECTURE.md).
    """
    if facts.security_level == SOFTWARE:
        # eIDAS 2015/1502 Annex 2.2.1 (substantial): the means must be protected against
        # duplication and tampering; a software key can be copied, so it is no second factor.
        return DeviceAssessment(
            Level.LOW, Reason("software_key", "the key is kept in software, not in hardware")
        )
    if facts.security_level not in HARDWARE_SECURITY_LEVELS:
        return DeviceAssessment(
            None,
            Reason("unknown_security_level", f"unknown key security level {facts.security_level!r}"),
        )
    if not facts.verified_boot:
        return DeviceAssessment(
            Level.LOW, Reason("boot_not_verified", "the device did not boot a verified system")
        )
    if not facts.device_locked:
        return DeviceAssessment(
            Level.LOW, Reason("bootloader_unlocked", "the device's bootloader is unlocked")
        )
    if facts.warnings:
        return DeviceAssessment(
            Level.LOW,
            Reason("attestation_warnings", "attestation warned: " + ", ".join(facts.warnings)),
        )
    return DeviceAssessment(
        Level.SUBSTANTIAL,
        Reason("hardware_key", f"the key is held in {facts.security_level} hardware"),
    )


def device_max_level(facts: DeviceAttestationFacts) -> Level | None:
    """Shorthand for ``assess_device(facts).max_level``."""
    return assess_device(facts).max_level
