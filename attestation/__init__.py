"""Verify device attestation evidence: pure, typed, one module per format.

from attestation import AndroidApp, AndroidKeyEvidence, TrustStore, verify

trust = TrustStore.default(android_revocations=RevocationList.from_json(raw, fetched_at=t))
result = verify(
    AndroidKeyEvidence(tuple(chain_der)),
    challenge=challenge,
    expected_app=(AndroidApp("de.city.app", frozenset({digest})), AppleApp(team, bundle)),
    trust=trust,
    now=datetime.now(UTC),
)
"""

from .android_key import verify_android_key
from .app_attest import AssertionResult, verify_app_attest, verify_app_attest_assertion
from .chain import AnchorSet
from .config import (
    AndroidApp,
    AppIdentity,
    AppleApp,
    RelyingParty,
    RevocationEntry,
    RevocationList,
    TrustStore,
    WebAuthnTrust,
)
from .errors import (
    AaguidMismatch,
    AppIdMismatch,
    AttestationError,
    AuthenticatorRevoked,
    BootStateUnverified,
    CertificateExpired,
    CertificateRevoked,
    ChainInvalid,
    ChallengeMismatch,
    CounterNotIncreasing,
    DeviceUnlocked,
    KeyMismatch,
    KeyNotGenerated,
    MalformedEvidence,
    RpIdMismatch,
    SecurityLevelTooLow,
    SignatureInvalid,
    UnsupportedFormat,
    UntrustedRoot,
    UserNotPresent,
)
from .result import AttestationResult, AttestedApp, DeviceFacts, SecurityLevel
from .verify import AndroidKeyEvidence, AppAttestEvidence, Evidence, WebAuthnEvidence, verify
from .webauthn import Fido2AttestationHook, check_client_data, load_mds3, verify_webauthn

__all__ = [
    "AaguidMismatch",
    "AnchorSet",
    "AndroidApp",
    "AndroidKeyEvidence",
    "AppAttestEvidence",
    "AppIdMismatch",
    "AppIdentity",
    "AppleApp",
    "AssertionResult",
    "AttestationError",
    "AttestationResult",
    "AttestedApp",
    "AuthenticatorRevoked",
    "BootStateUnverified",
    "CertificateExpired",
    "CertificateRevoked",
    "ChainInvalid",
    "ChallengeMismatch",
    "CounterNotIncreasing",
    "DeviceFacts",
    "DeviceUnlocked",
    "Evidence",
    "Fido2AttestationHook",
    "KeyMismatch",
    "KeyNotGenerated",
    "MalformedEvidence",
    "RelyingParty",
    "RevocationEntry",
    "RevocationList",
    "RpIdMismatch",
    "SecurityLevel",
    "SecurityLevelTooLow",
    "SignatureInvalid",
    "TrustStore",
    "UnsupportedFormat",
    "UntrustedRoot",
    "UserNotPresent",
    "WebAuthnEvidence",
    "WebAuthnTrust",
    "check_client_data",
    "load_mds3",
    "verify",
    "verify_android_key",
    "verify_app_attest",
    "verify_app_attest_assertion",
    "verify_webauthn",
]
