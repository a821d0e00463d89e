"""Changing the password from "My account": the current one is needed, guesses are throttled,
other browsers are logged out, this one stays."""

from __future__ import annotations

from sqlalchemy import func, select

from db import transaction
from db.audit import AuditEvent
from idp import throttle
from idp.models import LoginSession
from tests.idp.conftest import Browser, Idp, csrf

PASSWORD = "correct horse battery staple"
NEW = "a new and much longer passphrase"


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
