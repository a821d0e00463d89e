"""Change of e-mail address through HTTP, with the links delivered by a real SMTP server."""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

from sqlalchemy import select

from db import transaction
from db.audit import AuditEvent
from idp import accounts
from idp.accounts import email_of
from idp.config import SmtpConfig
from idp.models import Account
from tests.idp.conftest import Browser, Idp, csrf

PASSWORD = "correct horse battery staple"
CONFIRM_RE = re.compile(r"(http://\S+/account/email/confirm\?token=\S+)")


def _started(idp_factory: Any, smtp_server: Any) -> tuple[Idp, Any]:
    inbox, port = smtp_server
    return idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=port, sender="cityid <no@city.de>")), inbox


def _logged_in(idp: Idp, email: str) -> Browser:
    b = Browser(idp)
    r = b.login(email, PASSWORD, b.get(f"{idp.url}/login"))
    assert r.status_code == 200 and email in r.text
    return b


def _ask(b: Browser, new_email: str, password: str = PASSWORD, **extra: str) -> Any:
    page = b.get(f"{b.idp.url}/account/email")
    assert page.status_code == 200
    return b.post(
        f"{b.idp.url}/account/email",
        {"csrf_token": csrf(page.text), "email": new_email, "password": password, **extra},
    )


def _link_to(inbox: Any, address: str) -> str:
    """The confirmation link in the newest mail to ``address``."""
    link = CONFIRM_RE.search(_body(inbox.wait_for(address)))
    assert link, f"no confirmation link to {address}"
    return link.group(1)


def _requested(b: Browser, inbox: Any, new_email: str) -> str:
    """Ask (with the password) to change the address to ``new_email``; the link sent there."""
    assert _ask(b, new_email).status_code == 200
    return _link_to(inbox, new_email.lower())


def _mails_to(inbox: Any, address: str) -> list[Any]:
    return [m for m in inbox.messages if address in m["To"]]


def _body(msg: Any) -> str:
    return str(msg.get_body(preferencelist=("plain",)).get_content())


def _confirm(b: Browser, link: str) -> Any:
    page = b.get(link)
    if page.status_code == 400:  # a dead link is refused when opened already
        return page
    assert page.status_code == 200
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token
    return b.post(
        f"{b.idp.url}/account/email/confirm", {"csrf_token": csrf(page.text), "token": token.group(1)}
    )


def _address(idp: Idp, account_id: str) -> str:
    with idp.sessions()() as s:
        acct = s.get(Account, account_id)
        assert acct is not None
        return email_of(idp.keys, acct)


def _reasons(idp: Idp, action: str) -> list[str]:
    with idp.sessions()() as s:
        return list(
            s.scalars(select(AuditEvent.reason).where(AuditEvent.action == action).order_by(AuditEvent.seq))
        )


def test_address_changes_only_after_the_link_sent_to_the_new_address_is_followed(
    idp_factory: Any, smtp_server: Any
) -> None:
    idp, inbox = _started(idp_factory, smtp_server)
    account_id = idp.add_user("alt@example.org")
    b = _logged_in(idp, "alt@example.org")
    link = _requested(b, inbox, "Neu@Example.org")
    notice = _body(inbox.wait_for("alt@example.org"))
    assert "ne***@example.org" in notice and "neu@example.org" not in notice  # masked for the old one
    assert _address(idp, account_id) == "alt@example.org"  # nothing changes before the link

    # opening the link (as a mail scanner does) changes nothing; the button does
    assert Browser(idp).get(link).status_code == 200
    assert _address(idp, account_id) == "alt@example.org"
    assert _confirm(Browser(idp), link).status_code == 200
    assert _address(idp, account_id) == "neu@example.org"
    with inbox.cond:  # the mail thread sends it right after the request
        assert inbox.cond.wait_for(lambda: len(_mails_to(inbox, "alt@example.org")) >= 2, 10)
    changed = [m for m in _mails_to(inbox, "alt@example.org") if "ne***@example.org" in _body(m)]
    assert len(changed) == 2  # requested, then done

    assert _confirm(Browser(idp), link).status_code == 400  # single use
    fresh = Browser(idp)
    assert fresh.login("neu@example.org", PASSWORD, fresh.get(f"{idp.url}/login")).status_code == 200
    old = Browser(idp)
    page = old.get(f"{idp.url}/login")
    r = old.post(
        f"{idp.url}/login", {"csrf_token": csrf(page.text), "email": "alt@example.org", "password": PASSWORD}
    )
    assert r.status_code == 401


def test_wrong_password_sends_nothing_and_repeated_guesses_are_throttled(
    idp_factory: Any, smtp_server: Any
) -> None:
    idp, inbox = _started(idp_factory, smtp_server)
    idp.add_user("guard@example.org")
    b = _logged_in(idp, "guard@example.org")
    statuses = [_ask(b, "thief@example.org", "not the password").status_code for _ in range(6)]
    assert statuses[:5] == [401] * 5 and statuses[5] == 429  # NIST SP 800-63B §5.2.2
    time.sleep(0.3)
    assert not _mails_to(inbox, "thief@example.org") and not _mails_to(inbox, "guard@example.org")
    assert "wrong password" in _reasons(idp, "email.change_request")


def test_an_address_of_another_account_is_handled_like_a_free_one_no_enumeration(
    idp_factory: Any, smtp_server: Any
) -> None:
    idp, inbox = _started(idp_factory, smtp_server)
    account_id = idp.add_user("eins@example.org")
    idp.add_user("zwei@example.org")
    b = _logged_in(idp, "eins@example.org")
    free = _ask(b, "frei@example.org")
    assert free.status_code == 200
    other = _logged_in(idp, "zwei@example.org")
    idp.add_user("drei@example.org")
    taken = _ask(other, "drei@example.org")
    assert taken.status_code == 200
    title = re.compile(r"<h1>(.*?)</h1>")
    assert title.findall(free.text) == title.findall(taken.text)
    # the same mails either way: a link to the new address, a notice to the current one
    for new, current in (("frei@example.org", "eins@example.org"), ("drei@example.org", "zwei@example.org")):
        assert _link_to(inbox, new)
        assert "***@example.org" in _body(inbox.wait_for(current))
    # and the same audit record, which the requester can read in the data export
    reasons = _reasons(idp, "email.change_request")
    assert reasons == ["link sent to the new address"] * 2
    # following the link for the taken address changes nothing
    link = _link_to(inbox, "drei@example.org")
    assert _confirm(Browser(idp), link).status_code == 409
    assert _address(idp, account_id) == "eins@example.org"


def test_a_password_change_cancels_a_pending_change_of_address(idp_factory: Any, smtp_server: Any) -> None:
    # The notice tells a surprised owner to change the password: that must stop the change.
    idp, inbox = _started(idp_factory, smtp_server)
    account_id = idp.add_user("opfer@example.org")
    intruder = _logged_in(idp, "opfer@example.org")
    link = _requested(intruder, inbox, "dieb@example.org")
    inbox.wait_for("opfer@example.org")  # the notice of the request: it comes apart from the link
    owner = _logged_in(idp, "opfer@example.org")
    page = owner.get(f"{idp.url}/account/password")
    form = {"csrf_token": csrf(page.text), "current_password": PASSWORD}
    form |= {"password": "a new and much longer passphrase", "password2": "a new and much longer passphrase"}
    inbox.messages.clear()
    assert owner.post(f"{idp.url}/account/password", form).status_code == 200
    notice = inbox.wait_for("opfer@example.org")  # ASVS V2.2.3: the owner hears of the change
    assert "/forgot" in _body(notice) and "/account/password" not in _body(notice)
    assert _confirm(Browser(idp), link).status_code == 400
    assert _address(idp, account_id) == "opfer@example.org"


def test_after_a_change_no_older_link_acts_on_the_account(idp_factory: Any, smtp_server: Any) -> None:
    idp, inbox = _started(idp_factory, smtp_server)
    account_id = idp.add_user("alt@example.org")
    with transaction(idp.sessions()) as s:  # a reset link sent to the old mailbox earlier
        acct = s.get(Account, account_id)
        assert acct is not None
        reset = accounts.issue_email_token(s, idp.keys, acct, "reset", dt.timedelta(minutes=30))
    b = _logged_in(idp, "alt@example.org")
    link = _requested(b, inbox, "neu@example.org")
    assert _confirm(Browser(idp), link).status_code == 200
    fresh = Browser(idp)
    opened = fresh.get(f"{idp.url}/reset?token={reset}")
    assert opened.status_code == 400 and 'name="password"' not in opened.text  # dead when opened
    page = fresh.get(f"{idp.url}/forgot")
    new = "somebody else's passphrase"
    form = {"csrf_token": csrf(page.text), "token": reset, "password": new, "password2": new}
    assert fresh.post(f"{idp.url}/reset", form).status_code == 400


def test_an_old_mailbox_that_refuses_mail_does_not_stop_the_change(
    idp_factory: Any, smtp_server: Any
) -> None:
    idp, inbox = _started(idp_factory, smtp_server)
    account_id = idp.add_user("tot@example.org")
    inbox.refused.add("tot@example.org")
    b = _logged_in(idp, "tot@example.org")
    link = _requested(b, inbox, "lebendig@example.org")
    assert _confirm(Browser(idp), link).status_code == 200
    assert _address(idp, account_id) == "lebendig@example.org"


def test_following_the_link_after_someone_else_took_the_address_changes_nothing(
    idp_factory: Any, smtp_server: Any
) -> None:
    idp, inbox = _started(idp_factory, smtp_server)
    account_id = idp.add_user("erst@example.org")
    b = _logged_in(idp, "erst@example.org")
    link = _requested(b, inbox, "begehrt@example.org")
    idp.add_user("begehrt@example.org")
    assert _confirm(Browser(idp), link).status_code == 409
    assert _address(idp, account_id) == "erst@example.org"


def test_bad_input_is_refused_without_a_mail(idp_factory: Any, smtp_server: Any) -> None:
    idp, inbox = _started(idp_factory, smtp_server)
    idp.add_user("selbst@example.org")
    b = _logged_in(idp, "selbst@example.org")
    assert _ask(b, "no-address").status_code == 400
    assert _ask(b, "SELBST@example.org").status_code == 400  # already this account's address
    assert _ask(b, "x" * 2000 + "@example.org").status_code == 400
    no_csrf = b.post(f"{idp.url}/account/email", {"email": "n@example.org", "password": PASSWORD})
    assert no_csrf.status_code == 400  # CSRF token missing
    anonymous = Browser(idp)
    page = anonymous.get(f"{idp.url}/login")
    r = anonymous.post(
        f"{idp.url}/account/email",
        {"csrf_token": csrf(page.text), "email": "n@example.org", "password": PASSWORD},
    )
    assert r.status_code == 303 and r.headers["Location"] == "/login"
    assert _confirm(Browser(idp), f"{idp.url}/account/email/confirm?token=made-up").status_code == 400
    time.sleep(0.3)
    assert not inbox.messages


def test_a_new_request_cancels_the_link_sent_to_a_mistyped_address(
    idp_factory: Any, smtp_server: Any
) -> None:
    from idp.models import EmailToken

    idp, inbox = _started(idp_factory, smtp_server)
    account_id = idp.add_user("maria@example.org")
    b = _logged_in(idp, "maria@example.org")
    typo = _requested(b, inbox, "maira@example.org")
    with transaction(idp.sessions()) as s:  # the first request was over a minute ago (the mail limit)
        for row in s.scalars(select(EmailToken)):
            row.expires_at -= dt.timedelta(minutes=2)
    right = _requested(b, inbox, "maria.neu@example.org")
    assert _confirm(Browser(idp), typo).status_code == 400  # whoever reads the typo's mailbox: nothing
    assert _address(idp, account_id) == "maria@example.org"
    assert _confirm(Browser(idp), right).status_code == 200
    assert _address(idp, account_id) == "maria.neu@example.org"


def test_the_data_export_holds_a_pending_new_address_and_the_failed_logins_gdpr_15(
    idp_factory: Any, smtp_server: Any
) -> None:
    from idp.privacy import export_account

    idp, inbox = _started(idp_factory, smtp_server)
    account_id = idp.add_user("alt@example.org")

    def wrong_password() -> int:
        b = Browser(idp)
        return int(b.login("alt@example.org", "not the password", b.get(f"{idp.url}/login")).status_code)

    assert wrong_password() == 401
    _requested(_logged_in(idp, "alt@example.org"), inbox, "neu@example.org")
    with idp.sessions()() as s:
        data = export_account(s, idp.keys, account_id, controller="Musterstadt")
    assert [(p["purpose"], p["new_email"]) for p in data["pending_links"]] == [
        ("email_change", "neu@example.org")
    ]
    assert data["failed_logins"] is None  # the login after the wrong password ended the run
    assert wrong_password() == 401
    with idp.sessions()() as s:
        assert (
            export_account(s, idp.keys, account_id, controller="Musterstadt")["failed_logins"]["failures"]
            == 1
        )
