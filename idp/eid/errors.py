"""One exception per reason an eID response is refused.

``description`` is safe to show the citizen; ``detail`` is for the audit log and debugging
only (it may name certificates, IDs, or upstream messages).
"""

from __future__ import annotations


class EidError(Exception):
    code = "eid_failed"
    description = "The eID service could not confirm your identity."

    def __init__(self, detail: str = "") -> None:
        self.detail = detail
        super().__init__(f"{self.code}: {detail}" if detail else self.code)


class SimulatorDisabled(EidError):
    code = "simulator_disabled"
    description = "The eID simulator is not enabled on this server."


class MalformedResponse(EidError):
    code = "malformed_response"


class StateMismatch(EidError):
    code = "state_mismatch"
    description = "This eID response does not belong to your login. Please start again."


class UpstreamRefused(EidError):
    code = "upstream_refused"
    description = "The eID service did not confirm your identity (cancelled or failed)."


class DestinationMismatch(EidError):
    code = "destination_mismatch"


class IssuerMismatch(EidError):
    code = "issuer_mismatch"


class InResponseToMismatch(EidError):
    code = "in_response_to_mismatch"
    description = "This eID response does not belong to your login. Please start again."


class AssertionNotEncrypted(EidError):
    code = "assertion_not_encrypted"


class WeakEncryption(EidError):
    code = "weak_encryption"


class DecryptionFailed(EidError):
    code = "decryption_failed"


class AssertionNotSigned(EidError):
    code = "assertion_not_signed"


class SignatureInvalid(EidError):
    code = "signature_invalid"


class AudienceMismatch(EidError):
    code = "audience_mismatch"


class RecipientMismatch(EidError):
    code = "recipient_mismatch"


class NotYetValid(EidError):
    code = "not_yet_valid"


class Expired(EidError):
    code = "expired"
    description = "The eID response has expired. Please start again."


class Replayed(EidError):
    code = "replayed"
    description = "This eID response was already used. Please start again."


class NonceMismatch(EidError):
    code = "nonce_mismatch"


class LevelUnknown(EidError):
    code = "level_unknown"


class LevelTooLow(EidError):
    code = "level_too_low"
    description = "The eID service confirmed your identity at a lower level than needed."


class TrustLevelMissing(EidError):
    code = "trust_level_missing"


class TrustLevelUnknown(EidError):
    code = "trust_level_unknown"


class PseudonymMissing(EidError):
    code = "pseudonym_missing"


class TokenRequestFailed(EidError):
    code = "token_request_failed"


class MetadataUnusable(EidError):
    """The IdP metadata file cannot be used (changed to something unreadable, or without a
    usable single sign-on service): fail closed until an admin fixes it."""

    code = "metadata_unusable"
    description = "Login with the ID card is not available at the moment. Please try again later."
