"""Registration with e-mail verification through a real SMTP server; password reset."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select

from db.audit import AuditEvent
from idp.config import SmtpConfig
from idp.models import EmailToken
from tests.idp.conftest import Browser, csrf

PASSWORD = "a long and memorable passphrase"


def _link(msg: Any, path: str) -> str:
    body = msg.get_body(preferencelist=("plain",)).get_content()
    m = re.search(rf"(http://\S+/{path}\?token=\S+)", body)
    assert m, body
    return m.group(1)


def _register(browser: Browser, email: str, password: str = PASSWORD, password2: str | None = None) -> Any:
    page = browser.get(f"{browser.idp.url}/register")
    return browser.post(
        f"{browser.idp.url}/register",
        {
            "csrf_token": csrf(page.text),
            "email": email,
            "password": password,
            "password2": password if password2 is None else password2,
        },
    )


def test_registration_verifies_email_through_smtp_link_single_use(idp_factory: Any, smtp_server: Any) -> None:
    inbox, port = smtp_server
    idp = idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=port, sender="cityid <no@city.de>"))
    browser = Browser(idp)
    r = _register(browser, "Fritz@Example.org")
    assert r.status_code == 200
    # before verification: login refused with a clear message
    page = browser.get(f"{idp.url}/login")
    r = browser.post(
        f"{idp.url}/login",
        {"csrf_token": csrf(page.text), "email": "fritz@example.org", "password": PASSWORD},
    )
    assert r.status_code == 401
    msg = inbox.wait_for("fritz@example.org")
    link = _link(msg, "verify")
    # opening the link (as a mail scanner does) confirms nothing and uses nothing up
    assert browser.get(link).status_code == 200
    assert browser.get(link).status_code == 200
    page = browser.get(f"{idp.url}/login")
    r = browser.post(
        f"{idp.url}/login",
        {"csrf_token": csrf(page.text), "email": "fritz@example.org", "password": PASSWORD},
    )
    assert r.status_code == 401  # still unconfirmed
    assert browser.confirm_link(link).status_code == 200  # the button
    assert browser.confirm_link(link).status_code == 400  # single use
    page = browser.get(f"{idp.url}/login")
    r = browser.post(
        f"{idp.url}/login",
        {"csrf_token": csrf(page.text), "email": "fritz@example.org", "password": PASSWORD},
    )
    assert r.status_code == 302 and r.headers["Location"] == "/account"
    assert "fritz@example.org" in browser.get(f"{idp.url}/account").text


def test_registering_a_taken_address_looks_the_same_no_enumeration(idp: Any) -> None:
    idp.add_user("taken@example.org")
    b = Browser(idp)
    fresh = _register(b, "fresh@example.org")
    taken = _register(Browser(idp), "taken@example.org")
    assert fresh.status_code == taken.status_code == 200
    title = re.compile(r"<h1>(.*?)</h1>")
    assert title.findall(fresh.text) == title.findall(taken.text)


def test_weak_or_mismatched_passwords_and_bad_email_are_refused(idp: Any) -> None:
    b = Browser(idp)
    assert _register(b, "x@example.org", "short").status_code == 400
    assert _register(b, "x@example.org", PASSWORD, "different one!!").status_code == 400
    assert _register(b, "not-an-address", PASSWORD).status_code == 400
    assert _register(b, "x" * 2000 + "@example.org", PASSWORD).status_code == 400


def test_password_reset_same_answer_for_unknown_address_and_link_expires(
    idp_factory: Any, smtp_server: Any
) -> None:
    inbox, port = smtp_server
    idp = idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=port), password_reset_minutes=30)
    idp.add_user("greta@example.org")
    b = Browser(idp)
    answers = []
    for email in ("greta@example.org", "nobody@example.org"):
        page = b.get(f"{idp.url}/forgot")
        r = b.post(f"{idp.url}/forgot", {"csrf_token": csrf(page.text), "email": email})
        answers.append((r.status_code, re.findall(r"<h1>(.*?)</h1>", r.text)))
    assert answers[0] == answers[1]
    link = _link(inbox.wait_for("greta@example.org"), "reset")
    token = link.split("token=")[1]
    page = b.get(link)
    new_pw = "another long passphrase"
    r = b.post(
        f"{idp.url}/reset",
        {"csrf_token": csrf(page.text), "token": token, "password": new_pw, "password2": new_pw},
    )
    assert r.status_code == 200
    r = b.post(
        f"{idp.url}/reset",
        {"csrf_token": csrf(page.text), "token": token, "password": new_pw, "password2": new_pw},
    )
    assert r.status_code == 400  # used
    page = b.get(f"{idp.url}/login")
    r = b.post(
        f"{idp.url}/login", {"csrf_token": csrf(page.text), "email": "greta@example.org", "password": new_pw}
    )
    assert r.status_code == 302


def test_reset_links_are_sent_at_most_once_a_minute_per_address(idp_factory: Any, smtp_server: Any) -> None:
    inbox, port = smtp_server
    idp = idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=port))
    idp.add_user("greta@example.org")
    b = Browser(idp)
    answers = []
    for _ in range(3):
        page = b.get(f"{idp.url}/forgot")
        r = b.post(f"{idp.url}/forgot", {"csrf_token": csrf(page.text), "email": "greta@example.org"})
        answers.append((r.status_code, re.findall(r"<h1>(.*?)</h1>", r.text)))
    assert answers[0] == answers[1] == answers[2]  # the page does not tell
    inbox.wait_for("greta@example.org")
    with idp.sessions()() as s:
        assert s.execute(select(func.count()).select_from(EmailToken)).scalar_one() == 1
        suppressed = s.execute(select(AuditEvent).where(AuditEvent.action == "mail.suppressed")).all()
        assert len(suppressed) == 2
    assert len([m for m in inbox.messages if "greta@example.org" in m["To"]]) == 1
