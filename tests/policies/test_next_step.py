from datetime import UTC, datetime, timedelta

import pytest

from policies import (
    ACCESS_DENIED,
    ACR_HIGH,
    ACR_LOW,
    ACR_SUBSTANTIAL,
    INVALID_REQUEST,
    LOGIN_REQUIRED,
    UNMET_AUTHENTICATION_REQUIREMENTS,
    AccountFacts,
    AcrClaimRequest,
    AskStep,
    AuthnRequestFacts,
    ClientPolicy,
    DeviceFacts,
    Factor,
    FactorKind,
    Level,
    Refused,
    Satisfied,
    SessionFacts,
    Step,
    StepUpChallenge,
    WebAuthnFacts,
    next_step,
    required_level,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
REQUESTED_AT = NOW - timedelta(minutes=1)
LOW, SUB, HIGH = Level.LOW, Level.SUBSTANTIAL, Level.HIGH
SCOPES = {"payment": SUB}


def ago(minutes):
    return NOW - timedelta(minutes=minutes)


def pwd(minutes=5):
    return Factor(FactorKind.PASSWORD, ago(minutes))


def hwk(minutes=3, level=SUB):
    return Factor(FactorKind.DEVICE_KEY, ago(minutes), level)


def eid(minutes=2, level=HIGH):
    return Factor(FactorKind.EID, ago(minutes), level)


def decide(minimum=LOW, **kw):
    request = AuthnRequestFacts(requested_at=REQUESTED_AT, **kw)
    return required_level(request, ClientPolicy("rp", minimum_level=minimum), SCOPES)


PHONE = DeviceFacts("phone", SUB)
SOFT_PHONE = DeviceFacts("old-phone", LOW)
YUBIKEY = WebAuthnFacts("key-1", SUB)
PLAIN = AccountFacts(email_verified=True)
WITH_DEVICE = AccountFacts(email_verified=True, devices=(SOFT_PHONE, PHONE))
WITH_WEBAUTHN = AccountFacts(email_verified=True, webauthn=(WebAuthnFacts("k0", None), YUBIKEY))
WITH_ALL = AccountFacts(email_verified=True, devices=(PHONE,), webauthn=(YUBIKEY,), eid_level=HIGH)
EID_ONLY = AccountFacts(email_verified=True, has_password=False, eid_level=HIGH)


def satisfied(level, acr, amr, auth_time, code):
    return ("satisfied", level, acr, amr, auth_time, code)


def ask(step, alternatives, goal, code):
    return ("ask", step, alternatives, goal, code)


def refused(error, code):
    return ("refused", error, code)


def summary(result):
    if isinstance(result, Satisfied):
        return satisfied(result.level, result.acr, result.amr, result.auth_time, result.reason.code)
    if isinstance(result, AskStep):
        return ask(result.step, result.alternatives, result.goal, result.reason.code)
    assert isinstance(result, Refused)
    return refused(result.error, result.reason.code)


STEP_TABLE = [
    # --- low
    pytest.param(decide(), (), PLAIN, ask(Step.PASSWORD, (), LOW, "client_minimum"), id="low/ask-password"),
    pytest.param(
        decide(),
        (pwd(),),
        PLAIN,
        satisfied(LOW, ACR_LOW, ("pwd",), ago(5), "client_minimum"),
        id="low/password-satisfies",
    ),
    pytest.param(
        decide(),
        (pwd(), hwk(level=LOW)),
        WITH_DEVICE,
        satisfied(LOW, ACR_LOW, ("mfa", "pwd", "swk"), ago(5), "client_minimum"),
        id="low/software-key-reported-as-swk-rfc8176",
    ),
    pytest.param(
        decide(),
        (pwd(), hwk()),
        WITH_DEVICE,
        satisfied(SUB, ACR_SUBSTANTIAL, ("hwk", "mfa", "pwd"), ago(5), "client_minimum"),
        id="low/session-stronger-reports-its-real-acr-oidc-5.5.1.1",
    ),
    pytest.param(
        decide(acr_claim=AcrClaimRequest((ACR_LOW,), essential=True)),
        (pwd(), hwk()),
        WITH_DEVICE,
        satisfied(SUB, ACR_LOW, ("hwk", "mfa", "pwd"), ago(5), "client_minimum"),
        id="low/essential-low-reports-requested-value-oidc-5.5.1.1",
    ),
    pytest.param(
        decide(),
        (),
        EID_ONLY,
        ask(Step.EID, (), LOW, "client_minimum"),
        id="low/account-without-password-uses-eid",
    ),
    pytest.param(
        decide(),
        (),
        AccountFacts(email_verified=True, has_password=False),
        refused(UNMET_AUTHENTICATION_REQUIREMENTS, "no_method_for_level"),
        id="fail/account-without-any-method",
    ),
    pytest.param(
        decide(),
        (pwd(),),
        AccountFacts(email_verified=False),
        refused(ACCESS_DENIED, "email_unverified"),
        id="fail/email-unverified-may-not-reach-low",
    ),
    # --- substantial
    pytest.param(
        decide(scopes=frozenset({"payment"})),
        (),
        WITH_ALL,
        ask(Step.PASSWORD, (Step.EID,), SUB, "scope_requires_level"),
        id="substantial/fresh-session-asks-password-first",
    ),
    pytest.param(
        decide(scopes=frozenset({"payment"})),
        (pwd(),),
        WITH_ALL,
        ask(Step.DEVICE, (Step.WEBAUTHN, Step.EID), SUB, "step_up"),
        id="substantial/low-session-steps-up-with-device-not-password",
    ),
    pytest.param(
        decide(scopes=frozenset({"payment"})),
        (pwd(),),
        WITH_WEBAUTHN,
        ask(Step.WEBAUTHN, (), SUB, "step_up"),
        id="substantial/webauthn-when-no-device",
    ),
    pytest.param(
        decide(scopes=frozenset({"payment"})),
        (pwd(), hwk()),
        WITH_DEVICE,
        satisfied(SUB, ACR_SUBSTANTIAL, ("hwk", "mfa", "pwd"), ago(5), "scope_requires_level"),
        id="substantial/password-and-hardware-key",
    ),
    pytest.param(
        decide(scopes=frozenset({"payment"})),
        (pwd(), hwk(level=LOW)),
        AccountFacts(email_verified=True, devices=(SOFT_PHONE,)),
        refused(UNMET_AUTHENTICATION_REQUIREMENTS, "no_method_for_level"),
        id="fail/software-key-cannot-be-the-substantial-factor",
    ),
    pytest.param(
        decide(scopes=frozenset({"payment"})),
        (eid(level=SUB),),
        AccountFacts(email_verified=True, eid_level=SUB),
        satisfied(SUB, ACR_SUBSTANTIAL, ("mfa", "pin", "sc"), ago(2), "scope_requires_level"),
        id="substantial/eid-at-substantial",
    ),
    # --- freshness
    pytest.param(
        decide(max_age=600),
        (pwd(minutes=30),),
        PLAIN,
        ask(Step.PASSWORD, (), LOW, "reauthentication_required"),
        id="max-age/exceeded-asks-password-again-oidc-3.1.2.1",
    ),
    pytest.param(
        decide(scopes=frozenset({"payment"}), max_age=600),
        (pwd(minutes=30), hwk(minutes=2)),
        WITH_DEVICE,
        ask(Step.PASSWORD, (), SUB, "reauthentication_required"),
        id="max-age/fresh-device-still-counts-password-again",
    ),
    pytest.param(
        decide(scopes=frozenset({"payment"}), max_age=600),
        (pwd(minutes=30), pwd(minutes=1), hwk(minutes=2)),
        WITH_DEVICE,
        satisfied(SUB, ACR_SUBSTANTIAL, ("hwk", "mfa", "pwd"), ago(2), "scope_requires_level"),
        id="max-age/auth-time-is-oldest-counted-factor",
    ),
    pytest.param(
        decide(max_age=0),
        (pwd(minutes=0.5),),
        PLAIN,
        satisfied(LOW, ACR_LOW, ("pwd",), ago(0.5), "client_minimum"),
        id="max-age/zero-counts-factors-from-this-request",
    ),
    pytest.param(
        decide(max_age=0),
        (pwd(minutes=1.5),),
        PLAIN,
        ask(Step.PASSWORD, (), LOW, "reauthentication_required"),
        id="max-age/zero-is-prompt-login-oidc-errata",
    ),
    pytest.param(
        decide(prompt=frozenset({"login"})),
        (pwd(minutes=2),),
        PLAIN,
        ask(Step.PASSWORD, (), LOW, "reauthentication_required"),
        id="prompt-login/factor-before-request-is-stale",
    ),
    pytest.param(
        decide(prompt=frozenset({"login"}), max_age=3600),
        (pwd(minutes=0.5),),
        PLAIN,
        satisfied(LOW, ACR_LOW, ("pwd",), ago(0.5), "client_minimum"),
        id="prompt-login/factor-after-request-counts",
    ),
    pytest.param(
        decide(),
        (pwd(minutes=-5),),
        PLAIN,
        ask(Step.PASSWORD, (), LOW, "reauthentication_required"),
        id="fail/factor-from-the-future-ignored",
    ),
    pytest.param(
        decide(prompt=frozenset({"none"})),
        (),
        PLAIN,
        refused(LOGIN_REQUIRED, "interaction_needed"),
        id="prompt-none/step-needed-login-required-oidc-3.1.2.6",
    ),
    pytest.param(
        decide(prompt=frozenset({"none"})),
        (pwd(),),
        PLAIN,
        satisfied(LOW, ACR_LOW, ("pwd",), ago(5), "client_minimum"),
        id="prompt-none/already-satisfied",
    ),
    # --- high
    pytest.param(
        decide(minimum=HIGH),
        (pwd(),),
        WITH_ALL,
        ask(Step.EID, (), HIGH, "step_up"),
        id="high/asks-eid",
    ),
    pytest.param(
        decide(minimum=HIGH),
        (eid(),),
        WITH_ALL,
        satisfied(HIGH, ACR_HIGH, ("mfa", "pin", "sc"), ago(2), "client_minimum"),
        id="high/eid-satisfies",
    ),
    pytest.param(
        decide(acr_claim=AcrClaimRequest((ACR_HIGH,), essential=True)),
        (pwd(), hwk()),
        WITH_DEVICE,
        refused(UNMET_AUTHENTICATION_REQUIREMENTS, "no_method_for_level"),
        id="fail/essential-high-without-eid-oidc-5.5.1.1",
    ),
    pytest.param(
        decide(step_up=StepUpChallenge(acr_values=(ACR_HIGH,))),
        (pwd(), hwk()),
        WITH_DEVICE,
        refused(UNMET_AUTHENTICATION_REQUIREMENTS, "no_method_for_level"),
        id="fail/rfc9470-challenge-unreachable",
    ),
    # --- voluntary best effort
    pytest.param(
        decide(acr_values=(ACR_HIGH,)),
        (pwd(),),
        WITH_DEVICE,
        ask(Step.DEVICE, (), SUB, "best_effort"),
        id="voluntary/high-unreachable-steps-up-to-best-oidc-3.1.2.1",
    ),
    pytest.param(
        decide(acr_values=(ACR_HIGH,)),
        (pwd(), hwk()),
        WITH_DEVICE,
        satisfied(SUB, ACR_SUBSTANTIAL, ("hwk", "mfa", "pwd"), ago(5), "best_effort"),
        id="voluntary/best-effort-satisfied-reports-honest-acr",
    ),
    # --- refusals carried through
    pytest.param(
        decide(max_age=-1),
        (pwd(),),
        PLAIN,
        refused(INVALID_REQUEST, "max_age_negative"),
        id="fail/refused-decision-is-carried-through",
    ),
]


@pytest.mark.parametrize(("decision", "factors", "account", "expected"), STEP_TABLE)
def test_next_step_table(decision, factors, account, expected):
    result = next_step(decision, SessionFacts(factors), account, NOW)
    assert summary(result) == expected
    assert result.reason.text


@pytest.mark.parametrize(
    ("now", "factors"),
    [
        pytest.param(datetime(2026, 11, 24, 12, 0), (), id="naive-now"),
        pytest.param(NOW, (Factor(FactorKind.PASSWORD, datetime(2026, 11, 24, 11, 0)),), id="naive"),
    ],
)
def test_naive_datetimes_are_rejected(now, factors):
    with pytest.raises(ValueError, match="aware"):
        next_step(decide(), SessionFacts(factors), PLAIN, now)


def test_wallet_pid_reaches_high_like_the_id_card_and_amr_names_the_wallet_rfc8176() -> None:
    wallet = Factor(FactorKind.WALLET, ago(2), HIGH)
    got = summary(next_step(decide(HIGH), SessionFacts((pwd(), wallet)), WITH_ALL, NOW))
    assert got == satisfied(HIGH, ACR_HIGH, ("hwk", "mfa", "pin", "pwd", "wallet"), ago(5), "client_minimum")
    alone = summary(next_step(decide(HIGH), SessionFacts((wallet,)), EID_ONLY, NOW))
    assert alone == satisfied(HIGH, ACR_HIGH, ("hwk", "mfa", "pin", "wallet"), ago(2), "client_minimum")
    # a wallet factor of a lower level (should a connector report one) does not reach high
    low = summary(
        next_step(decide(HIGH), SessionFacts((pwd(), Factor(FactorKind.WALLET, ago(2), SUB))), WITH_ALL, NOW)
    )
    assert low[0] == "ask"
