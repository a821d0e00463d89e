"""The login POST answers with the authorization response when nothing else is missing (issue
14: one round trip less per login), and only then: consent, step-up and prompt=consent still
send the citizen back to /authorize. The code is the one /authorize would have issued."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from db import transaction
from db.audit import AuditEvent
from idp.config import LEVEL_HIGH, LEVEL_LOW
from tests.idp.conftest import Browser, Idp, csrf, query
from tests.stepup.conftest import PASSWORD, REDIRECT, Rp

EMAIL = "anna@example.org"


def _service(idp: Idp, **kw: Any) -> Rp:
    cid, secret = idp.add_client(name="Bürgeramt", redirect_uris=[REDIRECT], scope="openid email", **kw)
    return Rp(idp, cid, secret)


def _login_post(browser: Browser, url: str) -> Any:
    """Start at the service's authorization URL, land on the login page, send the password:
    the login POST's own answer (not followed)."""
    page = browser.follow(browser.get(url))
    assert page.status_code == 200 and 'name="password"' in page.text, page.text[:500]
    action = page.url.removeprefix(browser.idp.url) if page.url.startswith(browser.idp.url) else page.url
    assert action.startswith("/login"), page.url
    return browser.post(
        browser.idp.url + action, {"csrf_token": csrf(page.text), "email": EMAIL, "password": PASSWORD}
    )


def _consented(idp: Idp, rp: Rp) -> None:
    """The citizen logged in at ``rp`` once and allowed it (consent stored), in another browser."""
    b = Browser(idp)
    url, _verifier, _state = rp.authorize_url(scope="openid email")
    page = b.follow(_login_post(b, url))
    assert 'name="decision"' in page.text
    answer = b.consent(page)
    assert answer.status_code == 302 and answer.headers["Location"].startswith(REDIRECT)


def _audit_actions(idp: Idp, since: int) -> list[tuple[str, str]]:
    with transaction(idp.sessions()) as s:
        rows = s.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars().all()
        return [(r.action, r.outcome) for r in rows[since:]]


def _audit_count(idp: Idp) -> int:
    with transaction(idp.sessions()) as s:
        return len(s.execute(select(AuditEvent.seq)).all())


def test_login_post_answers_with_the_code_redirect_when_consent_was_already_given(idp: Idp) -> None:
    idp.add_user(EMAIL)
    rp = _service(idp)
    _consented(idp, rp)
    b = Browser(idp)
    url, _verifier, state = rp.authorize_url(scope="openid email")
    before = _audit_count(idp)
    answer = _login_post(b, url)
    # RFC 6749 §4.1.2: straight to the redirect URI with code and state; RFC 9207 §2: iss
    assert answer.status_code == 302, answer.text[:500]
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT + "?"), location
    q = query(location)
    assert q["code"] and q["state"] == state and q["iss"] == idp.url
    # the same audit entries as with the GET /authorize in between, in the same order
    assert _audit_actions(idp, before) == [
        ("authorize.step", "info"),
        ("login.password", "success"),
        ("authorize.code", "success"),
    ]
    # the pending authorization is done: the session logs in at the service again without a page
    again_url, _v, again_state = rp.authorize_url(scope="openid email")
    again = b.get(again_url)
    assert again.status_code == 302 and query(again.headers["Location"])["state"] == again_state


def _back_to_authorize(b: Browser, url: str) -> Any:
    """The login POST for ``url`` answers with no code but sends the browser back to /authorize
    (a step or a page is missing); the page /authorize then shows."""
    answer = _login_post(b, url)
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/authorize?")
    return b.follow(answer)


def test_login_post_still_shows_consent_when_it_was_not_given(idp: Idp) -> None:
    idp.add_user(EMAIL)
    rp = _service(idp)
    b = Browser(idp)
    url, _verifier, _state = rp.authorize_url(scope="openid email")
    page = _back_to_authorize(b, url)
    assert page.status_code == 200 and 'name="decision"' in page.text


def test_login_post_still_shows_consent_with_prompt_consent_oidc_core_3_1_2_1(idp: Idp) -> None:
    idp.add_user(EMAIL)
    rp = _service(idp)
    _consented(idp, rp)
    b = Browser(idp)
    url, _verifier, _state = rp.authorize_url(scope="openid email", prompt="consent")
    assert 'name="decision"' in _back_to_authorize(b, url).text


def test_login_post_still_shows_consent_for_a_scope_not_consented_yet(idp: Idp) -> None:
    idp.add_user(EMAIL)
    cid, secret = idp.add_client(name="Bürgeramt", redirect_uris=[REDIRECT], scope="openid email profile")
    rp = Rp(idp, cid, secret)
    _consented(idp, rp)  # openid email only
    b = Browser(idp)
    url, _verifier, _state = rp.authorize_url(scope="openid email profile")
    assert 'name="decision"' in _back_to_authorize(b, url).text


def test_login_post_still_steps_up_when_the_level_requires_it(idp_factory: Any) -> None:
    idp: Idp = idp_factory(eid_connector="simulator", eid_simulator_enabled=True)
    idp.add_user(EMAIL)
    rp = _service(idp, min_level=LEVEL_HIGH)
    b = Browser(idp)
    url, _verifier, _state = rp.authorize_url(scope="openid email")
    step = _back_to_authorize(b, url)
    assert step.status_code == 200 and "/login/eid" in step.url


def test_code_from_the_login_post_redeems_at_token_as_one_from_authorize(idp: Idp) -> None:
    """The code the login POST answers with, and the one the same session then gets from
    /authorize (single sign-on), give the same ID token claims: auth_time, acr, amr, sid, sub."""
    idp.add_user(EMAIL)
    rp = _service(idp)
    _consented(idp, rp)
    b = Browser(idp)
    url, verifier, _state = rp.authorize_url(scope="openid email")
    answer = _login_post(b, url)
    assert answer.status_code == 302 and answer.headers["Location"].startswith(REDIRECT)
    first = rp.claims(rp.redeem(answer.headers["Location"], verifier)["id_token"])

    url2, verifier2, _state2 = rp.authorize_url(scope="openid email")
    sso = b.get(url2)
    assert sso.status_code == 302 and sso.headers["Location"].startswith(REDIRECT)
    token2 = rp.redeem(sso.headers["Location"], verifier2)
    second = rp.claims(token2["id_token"])

    assert first["acr"] == LEVEL_LOW and first["amr"] == ["pwd"]
    for claim in ("iss", "aud", "sub", "auth_time", "acr", "amr", "sid", "email", "email_verified"):
        assert first.get(claim) == second.get(claim), claim
    assert set(first) == set(second)
    assert first["nonce"] != second["nonce"]  # each its own request's (OIDC Core §3.1.3.7)
