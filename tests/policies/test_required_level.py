from datetime import UTC, datetime

import pytest

from policies import (
    ACR_HIGH,
    ACR_LOW,
    ACR_SUBSTANTIAL,
    INVALID_REQUEST,
    UNMET_AUTHENTICATION_REQUIREMENTS,
    AcrClaimRequest,
    AuthnRequestFacts,
    ClientPolicy,
    Level,
    StepUpChallenge,
    required_level,
)

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
SCOPES = {"payment": Level.SUBSTANTIAL, "permits:write": Level.SUBSTANTIAL, "openid": Level.LOW}
LOW, SUB, HIGH = Level.LOW, Level.SUBSTANTIAL, Level.HIGH


def req(**kw):
    return AuthnRequestFacts(requested_at=T0, **kw)


def essential(*values):
    return AcrClaimRequest(values=values, essential=True)


# (request, client minimum, default_max_age) -> (target, minimum, essential, honoured_acr, code)
LEVEL_TABLE = [
    pytest.param(req(), LOW, None, (LOW, LOW, False, None, "client_minimum"), id="default-low"),
    pytest.param(req(), SUB, None, (SUB, SUB, False, None, "client_minimum"), id="client-minimum"),
    pytest.param(
        req(scopes=frozenset({"openid", "payment"})),
        LOW,
        None,
        (SUB, SUB, False, None, "scope_requires_level"),
        id="scope/payment-needs-substantial",
    ),
    pytest.param(
        req(scopes=frozenset({"permits:write"})),
        HIGH,
        None,
        (HIGH, HIGH, False, None, "client_minimum"),
        id="scope/weaker-than-client-minimum",
    ),
    pytest.param(
        req(acr_values=(ACR_SUBSTANTIAL,)),
        LOW,
        None,
        (SUB, LOW, False, ACR_SUBSTANTIAL, "acr_values_preference"),
        id="voluntary/acr_values-raise-target-not-minimum-oidc-3.1.2.1",
    ),
    pytest.param(
        req(acr_values=("urn:unknown", ACR_HIGH, ACR_SUBSTANTIAL)),
        LOW,
        None,
        (HIGH, LOW, False, ACR_HIGH, "acr_values_preference"),
        id="voluntary/first-known-in-preference-order",
    ),
    pytest.param(
        req(acr_values=("urn:unknown",)),
        LOW,
        None,
        (LOW, LOW, False, None, "client_minimum"),
        id="voluntary/unknown-acr-ignored",
    ),
    pytest.param(
        req(acr_values=(ACR_LOW,)),
        LOW,
        None,
        (LOW, LOW, False, ACR_LOW, "client_minimum"),
        id="voluntary/equal-to-minimum-honoured",
    ),
    pytest.param(
        req(acr_values=(ACR_LOW,), scopes=frozenset({"payment"})),
        LOW,
        None,
        (SUB, SUB, False, None, "acr_values_below_minimum"),
        id="voluntary/below-minimum-not-honoured",
    ),
    pytest.param(
        req(acr_claim=AcrClaimRequest(values=(ACR_HIGH,))),
        LOW,
        None,
        (HIGH, LOW, False, ACR_HIGH, "acr_values_preference"),
        id="voluntary/non-essential-acr-claim-oidc-5.5.1.1",
    ),
    pytest.param(
        req(acr_claim=essential(ACR_HIGH, ACR_SUBSTANTIAL)),
        LOW,
        None,
        (SUB, SUB, True, ACR_SUBSTANTIAL, "essential_acr"),
        id="essential/lowest-requested-is-minimum-oidc-5.5.1.1",
    ),
    pytest.param(
        req(acr_claim=essential("urn:x", ACR_LOW)),
        SUB,
        None,
        (SUB, SUB, True, ACR_LOW, "client_minimum"),
        id="essential/weaker-than-client-reports-requested-value",
    ),
    pytest.param(
        req(acr_claim=essential(ACR_SUBSTANTIAL), acr_values=(ACR_HIGH,)),
        LOW,
        None,
        (SUB, SUB, True, ACR_SUBSTANTIAL, "essential_acr"),
        id="essential-bounds-voluntary-preference-oidc-5.5.1.1",
    ),
    pytest.param(
        req(acr_claim=essential(ACR_SUBSTANTIAL, ACR_HIGH), acr_values=(ACR_HIGH,)),
        LOW,
        None,
        (HIGH, SUB, True, ACR_HIGH, "acr_values_preference"),
        id="essential-plus-voluntary-preference",
    ),
    pytest.param(
        req(step_up=StepUpChallenge(acr_values=(ACR_HIGH,))),
        LOW,
        None,
        (HIGH, HIGH, True, ACR_HIGH, "step_up_challenge"),
        id="rfc9470/challenge-acr-is-a-must",
    ),
    pytest.param(
        req(step_up=StepUpChallenge(acr_values=(ACR_LOW,))),
        SUB,
        None,
        (SUB, SUB, True, ACR_LOW, "client_minimum"),
        id="rfc9470/challenge-weaker-than-client",
    ),
    pytest.param(
        req(
            acr_claim=essential(ACR_SUBSTANTIAL, ACR_HIGH),
            step_up=StepUpChallenge(acr_values=(ACR_HIGH,)),
        ),
        LOW,
        None,
        (HIGH, HIGH, True, ACR_HIGH, "step_up_challenge"),
        id="rfc9470/intersects-with-essential",
    ),
    pytest.param(
        req(step_up=StepUpChallenge(max_age=60)),
        LOW,
        None,
        (LOW, LOW, False, None, "client_minimum"),
        id="rfc9470/max-age-only",
    ),
]


@pytest.mark.parametrize(("request_facts", "minimum", "default_max_age", "expected"), LEVEL_TABLE)
def test_required_level_table(request_facts, minimum, default_max_age, expected):
    client = ClientPolicy("rp", minimum_level=minimum, default_max_age=default_max_age)
    decision = required_level(request_facts, client, SCOPES)
    assert decision.refusal is None
    got = (
        decision.target,
        decision.minimum,
        decision.essential,
        decision.honoured_acr,
        decision.reason.code,
    )
    assert got == expected
    assert decision.reason.text


@pytest.mark.parametrize(
    ("request_facts", "error", "code"),
    [
        pytest.param(
            req(acr_claim=essential("urn:unknown")),
            UNMET_AUTHENTICATION_REQUIREMENTS,
            "essential_acr_unknown",
            id="fail/essential-unknown-acr-oidc-5.5.1.1",
        ),
        pytest.param(
            req(step_up=StepUpChallenge(acr_values=("urn:unknown",))),
            UNMET_AUTHENTICATION_REQUIREMENTS,
            "step_up_acr_unknown",
            id="fail/rfc9470-unknown-acr",
        ),
        pytest.param(
            req(acr_claim=essential(ACR_LOW), step_up=StepUpChallenge(acr_values=(ACR_HIGH,))),
            UNMET_AUTHENTICATION_REQUIREMENTS,
            "acr_conflict",
            id="fail/essential-and-challenge-disjoint",
        ),
        pytest.param(
            req(prompt=frozenset({"none", "login"})),
            INVALID_REQUEST,
            "prompt_none_combined",
            id="fail/prompt-none-with-login-oidc-3.1.2.1",
        ),
        pytest.param(req(max_age=-1), INVALID_REQUEST, "max_age_negative", id="fail/negative-max-age"),
    ],
)
def test_required_level_refusals(request_facts, error, code):
    decision = required_level(request_facts, ClientPolicy("rp"), SCOPES)
    assert decision.refusal is not None
    assert decision.refusal.error == error
    assert decision.refusal.reason.code == code == decision.reason.code


@pytest.mark.parametrize(
    ("request_facts", "default_max_age", "max_age", "force_reauth", "prompt_none"),
    [
        pytest.param(req(), None, None, False, False, id="no-bounds"),
        pytest.param(req(max_age=300), None, 300, False, False, id="max-age"),
        pytest.param(req(), 900, 900, False, False, id="client-default-max-age"),
        pytest.param(req(max_age=1200), 900, 900, False, False, id="smallest-bound-wins"),
        pytest.param(
            req(max_age=600, step_up=StepUpChallenge(max_age=120)),
            None,
            120,
            False,
            False,
            id="rfc9470-challenge-max-age",
        ),
        pytest.param(req(max_age=0), None, 0, True, False, id="max-age-zero-is-prompt-login-oidc-errata"),
        pytest.param(req(prompt=frozenset({"login"})), None, None, True, False, id="prompt-login"),
        pytest.param(req(prompt=frozenset({"none"})), None, None, False, True, id="prompt-none"),
    ],
)
def test_freshness_from_max_age_and_prompt(
    request_facts, default_max_age, max_age, force_reauth, prompt_none
):
    decision = required_level(request_facts, ClientPolicy("rp", default_max_age=default_max_age), SCOPES)
    assert (decision.max_age, decision.force_reauth, decision.prompt_none) == (
        max_age,
        force_reauth,
        prompt_none,
    )
    assert decision.requested_at == T0


@pytest.mark.parametrize(
    ("reportable", "achieved", "acr"),
    [
        pytest.param((), HIGH, ACR_HIGH, id="voluntary-reports-achieved"),
        pytest.param((ACR_SUBSTANTIAL,), HIGH, ACR_SUBSTANTIAL, id="essential-match-oidc-5.5.1.1"),
        pytest.param((ACR_LOW, ACR_SUBSTANTIAL), HIGH, ACR_SUBSTANTIAL, id="essential-highest-satisfied"),
    ],
)
def test_reported_acr_matches_an_essential_value(reportable, achieved, acr):
    claim = essential(*reportable) if reportable else None
    decision = required_level(req(acr_claim=claim), ClientPolicy("rp"), SCOPES)
    assert decision.acr_for(achieved) == acr
