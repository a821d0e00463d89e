"""Why a wallet presentation is refused. Each is an ``EidError``: ``description`` is safe to show
the citizen, ``detail`` (the constructor argument) goes to the audit log. A refusal that every
eID connector knows (nonce, audience, state, decryption) is the eID error of that name too, with
its code; it keeps the wallet's wording (WalletError comes before EidError in its MRO)."""

from __future__ import annotations

from idp.eid import errors as eid
from idp.eid.errors import EidError


class WalletError(EidError):
    code = "wallet_refused"
    description = "Your ID wallet's answer could not be accepted. Please start again."


class WalletDeclined(WalletError):
    code = "wallet_declined"
    description = "The wallet did not share the data (cancelled or refused)."


class NotEncrypted(WalletError):
    code = "response_not_encrypted"


class DecryptionFailed(eid.DecryptionFailed, WalletError):
    code = "response_decryption_failed"  # OpenID4VP §8.3: the JARM/JWE response


class MalformedPresentation(WalletError):
    code = "malformed_presentation"


class UntrustedIssuer(WalletError):
    code = "issuer_not_trusted"
    description = "The identity data in your wallet comes from a provider this service does not accept."


class BadSignature(WalletError):
    code = "issuer_signature_invalid"


class WrongType(WalletError):
    code = "credential_type_not_pid"
    description = "Please choose your personal identification data (PID) in the wallet."


class DisclosureNotInCredential(WalletError):
    code = "disclosure_digest_unknown"


class CredentialExpired(WalletError):
    code = "credential_expired"
    description = "The identity data in your wallet has expired. Please renew it in the wallet."


class CredentialNotYetValid(WalletError):
    code = "credential_not_yet_valid"


class KeyBindingInvalid(WalletError):
    code = "key_binding_invalid"


class NonceMismatch(eid.NonceMismatch, WalletError):
    pass


class AudienceMismatch(eid.AudienceMismatch, WalletError):
    pass


class StateMismatch(eid.StateMismatch, WalletError):
    description = WalletError.description


class StaleKeyBinding(WalletError):
    code = "key_binding_stale"


class Revoked(WalletError):
    code = "credential_revoked"
    description = "The identity data in your wallet has been revoked or suspended by its provider."


class StatusUnavailable(WalletError):
    code = "status_unavailable"
    description = (
        "The revocation status of your wallet's identity data could not be checked. Please try later."
    )


class ClaimMissing(WalletError):
    code = "claim_missing"
