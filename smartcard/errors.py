"""One exception class per protocol error the device API answers.

``code`` is the client-facing error code (RFC 6749 §5.2 style), ``description`` the client-facing
text, ``detail`` the debug detail for the audit log only (fosite's hint vs debug). HTTP status
is chosen at the edge (``idp/views/smartcard.py``) from ``status``.
"""

from __future__ import annotations


class SmartcardError(Exception):
    code = "invalid_request"
    status = 400
    description = "the request is not valid"

    def __init__(self, detail: str = "", description: str | None = None) -> None:
        super().__init__(detail or self.description)
        self.detail = detail[:300]
        if description is not None:
            self.description = description


class InvalidRequest(SmartcardError):
    code = "invalid_request"


class InvalidChallenge(SmartcardError):
    code = "invalid_challenge"
    description = "the challenge is unknown, expired, already used or not for this purpose"


class InvalidCsr(SmartcardError):
    code = "invalid_csr"
    description = "the certificate signing request is not acceptable"


class AttestationFailed(SmartcardError):
    code = "attestation_failed"
    description = "the key attestation could not be verified"


class KeyMismatch(SmartcardError):
    code = "key_mismatch"
    description = "the attested key is not the key in the certificate signing request"


class DeviceNotEligible(SmartcardError):
    code = "device_not_eligible"
    status = 403
    description = "this device cannot be enrolled"


class InvalidProof(SmartcardError):
    code = "invalid_device_proof"
    status = 401
    description = "the device proof is not valid"


class InvalidCertificate(SmartcardError):
    code = "invalid_certificate"
    status = 401
    description = "the device certificate is not valid"


class CertificateRevoked(SmartcardError):
    code = "certificate_revoked"
    status = 401
    description = "the device certificate has been revoked"


class AccessDenied(SmartcardError):
    code = "access_denied"
    status = 403
    description = "this device may not answer this challenge"


class InsufficientDeviceLevel(SmartcardError):
    code = "insufficient_device_level"
    status = 403
    description = "this device cannot confirm a login at the level asked for"


class BindingMismatch(SmartcardError):
    code = "binding_mismatch"
    description = "the signed binding data does not match the challenge"


class RenewalNotAllowed(SmartcardError):
    code = "renewal_not_allowed"
    status = 403
    description = "this certificate cannot be renewed now"


class UnknownDevice(SmartcardError):
    code = "not_found"
    status = 404
    description = "no such device"


class StepUpRequired(SmartcardError):
    code = "step_up_required"
    status = 403
    description = (
        "this account already has a means at substantial: adding a device needs a fresh "
        "authorization at substantial (acr_values) first"
    )
