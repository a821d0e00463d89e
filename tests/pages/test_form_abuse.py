"""Forms under abuse: each gets a clear page, a 4xx status and no change of state."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select

from db import transaction
from db.audit import AuditEvent
from idp.config import SmtpConfig
from idp.models import Account, Consent, Grant
from tests.idp.conftest import Browser, Idp, csrf
from tests.pages.helpers import PASSWORD, form_action, logged_in

REDIRECT = "http://127.0.0.1:9/cb"


def count(idp: Idp, model: Any, *where: Any) -> int:
    with transaction(idp.sessions()) as s:
        return int(s.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


def audit_actions(idp: Idp) -> list[str]:
    with transaction(idp.sessions()) as s:
        return list(s.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars())


def link_from(mail: Any) -> str:
    m = re.search(r"http://\S+", mail.get_content())
    assert m
    return m.group(0)


def register(b: Browser, email: str, password: str = PASSWORD, token: str | None = None) -> Any:
    page = b.get(b.idp.url + "/register")
    return b.post(
        b.idp.url + "/register",
        {"csrf_token": token or csrf(page.text), "email": email, "password": password, "password2": password},
    )


# ----------------------------------------------------------------------------- CSRF


def test_csrf_token_missing_is_refused_with_a_clear_page(idp: Idp) -> None:
    b = Browser(idp)
    b.get(idp.url + "/register")
    r = b.post(idp.url + "/register", {"email": "a@example.org", "password": PASSWORD, "password2": PASSWORD})
    assert r.status_code == 400
    assert "Dieses Formular ist abgelaufen" in r.text and 'href="/"' in r.text
    assert count(idp, Account) == 0
    assert "csrf.reject" in audit_actions(idp)


def test_csrf_token_from_another_browser_session_is_refused(idp: Idp) -> None:
    idp.add_user("vera@example.org")
    attacker = Browser(idp)
    foreign = csrf(attacker.get(idp.url + "/login").text)
    victim = Browser(idp)
    victim.get(idp.url + "/login")
    r = victim.post(
        idp.url + "/login", {"csrf_token": foreign, "email": "vera@example.org", "password": PASSWORD}
    )
    assert r.status_code == 400 and "Formular ist abgelaufen" in r.text
    assert victim.get(idp.url + "/account").status_code == 302  # not logged in
    # and on a state-changing account form
    b, _page = logged_in(idp, "vera@example.org")
    r = b.post(idp.url + "/account/delete", {"csrf_token": foreign, "password": PASSWORD, "confirm": "yes"})
    assert r.status_code == 400 and count(idp, Account) == 1


# ----------------------------------------------------------------------------- double submit


def test_double_submit_of_registration_creates_one_account_and_the_same_page(
    idp_factory: Any, smtp_server: Any
) -> None:
    _inbox, port = smtp_server
    idp = idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=port))
    b = Browser(idp)
    page = b.get(idp.url + "/register")
    token = csrf(page.text)
    first = register(b, "tom@example.org", token=token)
    second = register(b, "tom@example.org", token=token)
    assert first.status_code == second.status_code == 200
    assert first.text == second.text  # no account enumeration either
    assert count(idp, Account) == 1


def test_double_submit_of_password_reset_changes_the_password_once(
    idp_factory: Any, smtp_server: Any
) -> None:
    inbox, port = smtp_server
    idp = idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=port))
    idp.add_user("uta@example.org")
    b = Browser(idp)
    page = b.get(idp.url + "/forgot")
    b.post(idp.url + "/forgot", {"csrf_token": csrf(page.text), "email": "uta@example.org"})
    link = link_from(inbox.wait_for("uta@example.org"))
    page = b.get(link)
    form = {"csrf_token": csrf(page.text), "token": re.search(r'name="token" value="([^"]+)"', page.text)[1]}
    first = b.post(
        idp.url + "/reset", {**form, "password": "first new password", "password2": "first new password"}
    )
    second = b.post(
        idp.url + "/reset", {**form, "password": "second new password", "password2": "second new password"}
    )
    assert first.status_code == 200 and "Passwort geändert" in first.text
    assert second.status_code == 400 and "Link ist nicht gültig" in second.text
    assert 'href="/forgot"' in second.text  # a way on
    ok = Browser(idp)
    assert ok.login("uta@example.org", "first new password", ok.get(idp.url + "/login")).status_code == 200
    no = Browser(idp)
    assert no.login("uta@example.org", "second new password", no.get(idp.url + "/login")).status_code == 401


def test_double_submit_of_consent_issues_no_second_code(idp: Idp) -> None:
    cid, _secret = idp.add_client(name="Stadtbücherei", redirect_uris=[REDIRECT])
    idp.add_user("olga@example.org")
    b, _ = logged_in(idp, "olga@example.org")
    url = (
        f"{idp.url}/authorize?response_type=code&client_id={cid}&redirect_uri={REDIRECT}"
        "&scope=openid+email&state=s1&code_challenge=" + "E" * 43 + "&code_challenge_method=S256"
    )
    page = b.follow(b.get(url))
    assert page.status_code == 200 and "decision" in page.text
    action = idp.url + form_action(page.text, "/authorize")
    form = {"csrf_token": csrf(page.text), "decision": "allow"}
    first = b.post(action, form)
    assert first.status_code == 302 and "code=" in first.headers["Location"]
    second = b.post(action, form)
    assert second.status_code == 400, second.status_code
    assert "bereits gesendet" in second.text
    assert count(idp, Grant) == 1 and count(idp, Consent) == 1


# ----------------------------------------------------------------------------- logout, links, enumeration


def test_back_button_after_logout_shows_no_account_page(idp: Idp) -> None:
    idp.add_user("ben@example.org")
    b, page = logged_in(idp, "ben@example.org")
    r = b.get(idp.url + "/account")
    assert r.headers["Cache-Control"] == "no-store"  # the browser keeps no copy to go back to
    out = b.post(idp.url + "/account/logout", {"csrf_token": csrf(page)})
    assert out.status_code == 200 and "Sie sind abgemeldet" in out.text
    again = b.get(idp.url + "/account")
    assert again.status_code == 302 and again.headers["Location"] == "/login"
    # the old form cannot be replayed either
    replay = b.post(idp.url + "/account/export", {"csrf_token": csrf(page)})
    assert replay.status_code == 400


def test_expired_reset_link_gets_a_clear_page_and_changes_nothing(idp_factory: Any, smtp_server: Any) -> None:
    inbox, port = smtp_server
    idp = idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=port), password_reset_minutes=0)
    idp.add_user("eva@example.org")
    b = Browser(idp)
    page = b.get(idp.url + "/forgot")
    b.post(idp.url + "/forgot", {"csrf_token": csrf(page.text), "email": "eva@example.org"})
    link = link_from(inbox.wait_for("eva@example.org"))
    opened = b.get(link)  # the dead link says so when opened, not after a password was chosen
    assert opened.status_code == 400 and "abgelaufen" in opened.text and 'href="/forgot"' in opened.text
    assert 'name="password"' not in opened.text
    token = link.split("token=", 1)[1]
    r = b.post(
        idp.url + "/reset",
        {
            "csrf_token": csrf(page.text),
            "token": token,
            "password": "a new password!",
            "password2": "a new password!",
        },
    )
    assert r.status_code == 400 and "abgelaufen" in r.text and 'href="/forgot"' in r.text
    ok = Browser(idp)
    assert ok.login("eva@example.org", PASSWORD, ok.get(idp.url + "/login")).status_code == 200


def test_reset_for_unknown_address_answers_exactly_as_for_a_known_one(
    idp_factory: Any, smtp_server: Any
) -> None:
    inbox, port = smtp_server
    idp = idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=port))
    idp.add_user("known@example.org")
    answers = []
    for email in ("known@example.org", "unknown@example.org"):
        b = Browser(idp)
        page = b.get(idp.url + "/forgot")
        r = b.post(idp.url + "/forgot", {"csrf_token": csrf(page.text), "email": email})
        answers.append((r.status_code, r.text))
    assert answers[0] == answers[1]
    assert answers[0][0] == 200
    inbox.wait_for("known@example.org")
    assert not any("unknown@example.org" in m["To"] for m in inbox.messages)


# ----------------------------------------------------------------------------- hostile input


def test_overlong_input_is_refused_with_a_clear_page(idp: Idp) -> None:
    b = Browser(idp)
    long = "a" * 5000 + "@example.org"
    r = register(b, long)
    assert r.status_code == 400 and "Diese Eingabe ist zu lang." in r.text and 'role="alert"' in r.text
    page = b.get(idp.url + "/login")
    r = b.post(idp.url + "/login", {"csrf_token": csrf(page.text), "email": long, "password": "x" * 5000})
    assert r.status_code == 400 and "zu lang" in r.text
    assert count(idp, Account) == 0


def test_non_utf8_form_bodies_get_a_clear_page_and_change_nothing(idp: Idp) -> None:
    b = Browser(idp)
    token = csrf(b.get(idp.url + "/register").text)
    for body in (
        b"csrf_token="
        + token.encode()
        + b"&email=\xff\xfe@example.org&password=\xff\xfe\xfd" * 1
        + b"&password2=\xff\xfe\xfd",
        b"csrf_token=\xff\xfe&email=a@example.org",
        b"\xff\xfe\x00\x01",
    ):
        r = b.http.post(
            idp.url + "/register",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            allow_redirects=False,
            timeout=10,
        )
        assert 400 <= r.status_code < 500, (body, r.status_code)
        assert r.headers["Content-Type"].startswith("text/html") and "<h1>" in r.text
    r = b.http.post(
        idp.url + "/login",
        data=b"csrf_token=" + token.encode() + b"&email=\xc3\x28&password=\xff",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
        timeout=10,
    )
    assert 400 <= r.status_code < 500 and "<h1>" in r.text
    assert count(idp, Account) == 0
