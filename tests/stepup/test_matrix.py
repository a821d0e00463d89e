"""Session level x requested level x available methods, through HTTP: which step pages the
citizen is sent to, what the ID token reports (acr, amr, auth_time), and the refusals.

Available methods: password always; eID (simulator) when ``eid`` is on. The *substantial*
device step is not offered yet (virtual smartcards come later): an account without devices
reaches substantial only by eID, and without eID a substantial floor is refused.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from idp.config import LEVEL_HIGH, LEVEL_LOW, LEVEL_SUBSTANTIAL
from tests.idp.conftest import Browser, query
from tests.stepup.conftest import Rp, walk

EMAIL = "anna@example.org"
PWD = ["pwd"]
EID = ["mfa", "pin", "sc"]  # RFC 8176 §2: smart card + PIN, two kinds of factor
PWD_EID = ["mfa", "pin", "pwd", "sc"]
UNMET = "unmet_authentication_requirements"  # OIDC UAR 1.0 §2 / OIDC Core errata


def essential(*acrs: str) -> str:
    return json.dumps({"id_token": {"acr": {"essential": True, "values": list(acrs)}}})


@dataclass(frozen=True)
class Case:
    eid: bool  # eID connector (simulator) configured
    prior: str  # what the browser session already holds: none | low | high
    params: dict[str, str] = field(default_factory=dict)
    client: dict[str, Any] = field(default_factory=dict)
    scope: str = "openid"
    steps: tuple[str, ...] = ()
    acr: str | None = None
    amr: list[str] | None = None
    error: str | None = None
    fresh: bool = False  # auth_time must be from this request (prompt=login, max_age=0)


CASES = {
    # --- logged out
    "none/low/pwd": Case(False, "none", steps=("/login",), acr=LEVEL_LOW, amr=PWD),
    "none/acr_values-high/pwd+eid": Case(
        True, "none", {"acr_values": LEVEL_HIGH}, steps=("/login", "/login/eid"), acr=LEVEL_HIGH, amr=PWD_EID
    ),
    "none/acr_values-high/pwd-only:best-effort": Case(
        False, "none", {"acr_values": LEVEL_HIGH}, steps=("/login",), acr=LEVEL_LOW, amr=PWD
    ),
    "none/acr_values-substantial/pwd-only:best-effort": Case(
        False, "none", {"acr_values": LEVEL_SUBSTANTIAL}, steps=("/login",), acr=LEVEL_LOW, amr=PWD
    ),
    "none/essential-high/pwd-only:refused": Case(
        False, "none", {"claims": essential(LEVEL_HIGH)}, steps=("/login",), error=UNMET
    ),
    "none/essential-high/pwd+eid": Case(
        True,
        "none",
        {"claims": essential(LEVEL_HIGH)},
        steps=("/login", "/login/eid"),
        acr=LEVEL_HIGH,
        amr=PWD_EID,
    ),
    "none/essential-substantial/pwd+eid:reports-substantial": Case(
        True,
        "none",
        {"claims": essential(LEVEL_SUBSTANTIAL)},
        steps=("/login", "/login/eid"),
        acr=LEVEL_SUBSTANTIAL,  # OIDC Core §5.5.1.1: an acr the client asked for
        amr=PWD_EID,
    ),
    "none/client-min-high/pwd+eid": Case(
        True,
        "none",
        client={"min_level": LEVEL_HIGH},
        steps=("/login", "/login/eid"),
        acr=LEVEL_HIGH,
        amr=PWD_EID,
    ),
    "none/client-min-substantial/pwd-only:refused": Case(
        False, "none", client={"min_level": LEVEL_SUBSTANTIAL}, steps=("/login",), error=UNMET
    ),
    "none/scope-substantial/pwd-only:refused": Case(
        False,
        "none",
        scope="openid payment",
        client={"scope": "openid payment"},
        steps=("/login",),
        error=UNMET,
    ),
    "none/scope-substantial/pwd+eid": Case(
        True,
        "none",
        scope="openid payment",
        client={"scope": "openid payment"},
        steps=("/login", "/login/eid"),
        acr=LEVEL_HIGH,
        amr=PWD_EID,
    ),
    "none/client-scope-level-high/pwd+eid": Case(
        True,
        "none",
        scope="openid permits",
        client={"scope": "openid permits", "scope_levels": {"permits": LEVEL_HIGH}},
        steps=("/login", "/login/eid"),
        acr=LEVEL_HIGH,
        amr=PWD_EID,
    ),
    # --- session at low: step up, never restart
    "low/low/pwd": Case(False, "low", steps=(), acr=LEVEL_LOW, amr=PWD),
    "low/essential-high/pwd+eid:step-up": Case(
        True, "low", {"claims": essential(LEVEL_HIGH)}, steps=("/login/eid",), acr=LEVEL_HIGH, amr=PWD_EID
    ),
    "low/client-min-high/pwd-only:refused": Case(
        False, "low", client={"min_level": LEVEL_HIGH}, steps=(), error=UNMET
    ),
    "low/prompt-login/pwd": Case(
        False, "low", {"prompt": "login"}, steps=("/login",), acr=LEVEL_LOW, amr=PWD, fresh=True
    ),
    "low/max_age-0/pwd": Case(
        False, "low", {"max_age": "0"}, steps=("/login",), acr=LEVEL_LOW, amr=PWD, fresh=True
    ),
    "low/prompt-none-high/pwd+eid:login_required": Case(
        True, "low", {"prompt": "none", "claims": essential(LEVEL_HIGH)}, steps=(), error="login_required"
    ),
    # --- session at high (password + eID)
    "high/high/pwd+eid:no-prompt": Case(
        True, "high", {"acr_values": LEVEL_HIGH}, steps=(), acr=LEVEL_HIGH, amr=PWD_EID
    ),
    "high/low/pwd+eid:reports-high": Case(True, "high", steps=(), acr=LEVEL_HIGH, amr=PWD_EID),
    "high/prompt-login-high/pwd+eid:eid-again": Case(
        True,
        "high",
        {"prompt": "login", "acr_values": LEVEL_HIGH},
        steps=("/login/eid",),
        acr=LEVEL_HIGH,
        amr=EID,  # only the eID counts: the password is from before this request
        fresh=True,
    ),
    "high/max_age-0-client-min-high/pwd+eid:eid-again": Case(
        True,
        "high",
        {"max_age": "0"},
        client={"min_level": LEVEL_HIGH},
        steps=("/login/eid",),
        acr=LEVEL_HIGH,
        amr=EID,
        fresh=True,
    ),
    "high/max_age-3600-high/pwd+eid:no-prompt": Case(
        True,
        "high",
        {"max_age": "3600", "claims": essential(LEVEL_HIGH)},
        steps=(),
        acr=LEVEL_HIGH,
        amr=PWD_EID,
    ),
}


def _prior(idp: Any, browser: Browser, prior: str) -> None:
    """Bring the browser session to ``prior`` through a portal service."""
    if prior == "none":
        return
    client = {"min_level": LEVEL_HIGH} if prior == "high" else {}
    cid, secret = idp.add_client(name="Portal", redirect_uris=["http://127.0.0.1:9/cb"], **client)
    rp = Rp(idp, cid, secret)
    url, verifier, _state = rp.authorize_url()
    _steps, page = walk(browser, browser.follow(browser.get(url)), EMAIL)
    rp.redeem(page.headers["Location"], verifier)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_step_up_matrix_prompts_tokens_and_refusals(idp_factory: Any, case: Case) -> None:
    over = {"eid_connector": "simulator", "eid_simulator_enabled": True} if case.eid else {}
    idp = idp_factory(**over)
    idp.add_user(EMAIL)
    browser = Browser(idp)
    _prior(idp, browser, case.prior)
    if case.fresh:
        time.sleep(1.1)  # auth_time has one-second resolution
    cid, secret = idp.add_client(name="Service", redirect_uris=["http://127.0.0.1:9/cb"], **case.client)
    rp = Rp(idp, cid, secret)
    started = int(time.time())
    url, verifier, state = rp.authorize_url(scope=case.scope, **case.params)
    steps, page = walk(browser, browser.follow(browser.get(url)), EMAIL)

    assert tuple(steps) == case.steps
    answer = query(page.headers["Location"])
    assert answer["state"] == state and answer["iss"] == idp.url  # RFC 9207 §2, also on errors
    if case.error:
        assert answer.get("error") == case.error, answer
        assert "code" not in answer
        return
    assert "error" not in answer, answer
    claims = rp.claims(rp.redeem(page.headers["Location"], verifier)["id_token"])
    assert claims["acr"] == case.acr
    assert sorted(claims["amr"]) == case.amr
    if case.fresh:
        assert claims["auth_time"] >= started  # OIDC Core §3.1.2.1: reauthenticated now
    elif case.prior != "none":
        assert claims["auth_time"] <= started  # the earlier login still counts
