"""Changing the password from "My account": the current one is needed, guesses are throttled,
other browsers are logged out, this one stays."""

from __future__ import annotations

import datetime as dt

import requests
from sqlalchemy import func, select

from db import transaction
from db.audit import AuditEvent
from idp import accounts, throttle
from idp.models import Account, LoginSession, LogoutOutbox
from tests.idp.conftest import Browser, Idp, csrf
from tests.pages.helpers import sign_in_to_service

PASSWORD = "correct horse battery staple"
NEW = "a new and much longer passphrase"
REDIRECT = "http://127.0.0.1:9/cb"


def _logged_in(idp: Idp) -> Browser:
    b = Browser(idp)
    b.http.headers["Accept-Language"] = "en"
    b.login("anna@example.org", PASSWORD, b.get(f"{idp.url}/login"))
    return b


def _change(b: Browser, current: str, new: str, again: str | None = None) -> object:
    page = b.get(f"{b.idp.url}/account/password")
    assert page.status_code == 200
    form = {"csrf_token": csrf(page.text), "current_password": current, "password": new}
    form["password2"] = new if again is None else again
    return b.post(f"{b.idp.url}/account/password", form)


def _sessions(idp: Idp) -> int:
    with transaction(idp.sessions()) as s:
        q = select(func.count()).select_from(LoginSession).where(LoginSession.account_id.isnot(None))
        return int(s.execute(q).scalar_one())


def test_password_change_needs_the_current_password_and_logs_out_other_browsers(idp: Idp) -> None:
    idp.add_user("anna@example.org")
    here, elsewhere = _logged_in(idp), _logged_in(idp)
    assert "/account/password" in here.get(f"{idp.url}/account").text
    assert _sessions(idp) == 2

    r = _change(here, "not my password", NEW)
    assert r.status_code == 401  # type: ignore[attr-defined]
    r = _change(here, PASSWORD, NEW, again="something else entirely")
    assert r.status_code == 400  # type: ignore[attr-defined]
    r = _change(here, PASSWORD, "short")
    assert r.status_code == 400  # type: ignore[attr-defined]

    r = _change(here, PASSWORD, NEW)
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    assert _sessions(idp) == 1
    assert here.get(f"{idp.url}/account").status_code == 200  # still logged in here
    assert elsewhere.get(f"{idp.url}/account").status_code in (302, 303)  # logged out there
    fresh = Browser(idp)
    fresh.http.headers["Accept-Language"] = "en"
    assert fresh.login("anna@example.org", PASSWORD, fresh.get(f"{idp.url}/login")).status_code == 401
    ok = fresh.login("anna@example.org", NEW, fresh.get(f"{idp.url}/login"))
    assert ok.status_code in (200, 302, 303)
    with transaction(idp.sessions()) as s:
        outcomes = s.execute(
            select(AuditEvent.outcome).where(AuditEvent.action == "password.change")
        ).scalars()
        assert sorted(outcomes) == ["denied", "success"]


def test_guessing_the_current_password_is_throttled_like_logins_nist_63b_5_2_2(idp: Idp) -> None:
    idp.add_user("anna@example.org")
    b = _logged_in(idp)
    for _ in range(throttle.FREE_FAILURES):
        assert _change(b, "guess", NEW).status_code == 401  # type: ignore[attr-defined]
    r = _change(b, PASSWORD, NEW)  # even the right one waits now
    assert r.status_code == 429  # type: ignore[attr-defined]
    fresh = Browser(idp)
    assert fresh.login("anna@example.org", PASSWORD, fresh.get(f"{idp.url}/login")).status_code == 429


def _refresh(idp: Idp, cid: str, secret: str, token: dict[str, str]) -> int:
    r = requests.post(
        idp.url + "/token",
        auth=(cid, secret),
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
        timeout=10,
    )
    return r.status_code


def _notices(idp: Idp) -> int:
    with transaction(idp.sessions()) as s:
        return int(s.execute(select(func.count()).select_from(LogoutOutbox)).scalar_one())


def test_a_password_change_ends_the_other_browsers_at_the_services_too_owasp(idp: Idp) -> None:
    cid, secret = idp.add_client(
        name="Stadtbücherei", redirect_uris=[REDIRECT], backchannel_logout_uri="http://127.0.0.1:9/bcl"
    )
    idp.add_user("anna@example.org")
    here, elsewhere = _logged_in(idp), _logged_in(idp)
    mine = sign_in_to_service(idp, here, cid, secret, REDIRECT, "anna@example.org")
    theirs = sign_in_to_service(idp, elsewhere, cid, secret, REDIRECT, "anna@example.org")
    assert _change(here, PASSWORD, NEW).status_code == 200  # type: ignore[attr-defined]
    assert _refresh(idp, cid, secret, theirs) == 400  # the other browser's grant is revoked
    assert _refresh(idp, cid, secret, mine) == 200  # this browser's stays
    assert _notices(idp) == 1  # the service hears of the other session's end (back-channel logout)


def test_a_password_reset_ends_every_session_and_grant_of_the_account(idp: Idp) -> None:
    cid, secret = idp.add_client(name="Stadtbücherei", redirect_uris=[REDIRECT])
    account_id = idp.add_user("anna@example.org")
    b = _logged_in(idp)
    token = sign_in_to_service(idp, b, cid, secret, REDIRECT, "anna@example.org")
    with transaction(idp.sessions()) as s:
        acct = s.get(Account, account_id)
        assert acct is not None
        link = accounts.issue_email_token(s, idp.keys, acct, "reset", dt.timedelta(minutes=30))
    fresh = Browser(idp)
    page = fresh.get(f"{idp.url}/reset?token={link}")
    r = fresh.post(
        f"{idp.url}/reset", {"csrf_token": csrf(page.text), "token": link, "password": NEW, "password2": NEW}
    )
    assert r.status_code == 200
    assert _sessions(idp) == 0
    assert b.get(f"{idp.url}/account").status_code in (302, 303)
    assert _refresh(idp, cid, secret, token) == 400
