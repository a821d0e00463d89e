"""Pure level-of-assurance decisions: no I/O, no Flask, no database, nothing of ours imported.

The login flow calls ``required_level`` once per authorization request, then ``next_step``
after every factor the citizen completes, until it gets ``Satisfied`` or ``Refused``.
"""

from policies.devices import (
    DeviceAssessment,
    DeviceAttestationFacts,
    assess_device,
    device_max_level,
)
from policies.levels import (
    ACCESS_DENIED,
    ACR_HIGH,
    ACR_LOW,
    ACR_SUBSTANTIAL,
    INVALID_REQUEST,
    LOGIN_REQUIRED,
    UNMET_AUTHENTICATION_REQUIREMENTS,
    Level,
    Reason,
    Refused,
    known_levels,
    parse_acr,
)
from policies.request import (
    AcrClaimRequest,
    AuthnRequestFacts,
    ClientPolicy,
    LevelDecision,
    StepUpChallenge,
    required_level,
)
from policies.steps import (
    AccountFacts,
    AskStep,
    DeviceFacts,
    Factor,
    FactorKind,
    Satisfied,
    SessionFacts,
    Step,
    StepDecision,
    WebAuthnFacts,
    next_step,
)

__all__ = [
    "ACCESS_DENIED",
    "ACR_HIGH",
    "ACR_LOW",
    "ACR_SUBSTANTIAL",
    "INVALID_REQUEST",
    "LOGIN_REQUIRED",
    "UNMET_AUTHENTICATION_REQUIREMENTS",
    "AccountFacts",
    "AcrClaimRequest",
    "AskStep",
    "AuthnRequestFacts",
    "ClientPolicy",
    "DeviceAssessment",
    "DeviceAttestationFacts",
    "DeviceFacts",
    "Factor",
    "FactorKind",
    "Level",
    "LevelDecision",
    "Reason",
    "Refused",
    "Satisfied",
    "SessionFacts",
    "Step",
    "StepDecision",
    "StepUpChallenge",
    "WebAuthnFacts",
    "assess_device",
    "device_max_level",
    "known_levels",
    "next_step",
    "parse_acr",
    "required_level",
]
