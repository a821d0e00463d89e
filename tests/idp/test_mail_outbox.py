"""Mails go through the database outbox: queued with their link, sent after the commit, retried.

A slow or dead mail server must hold no database lock, lose no link and not tell which
addresses have accounts (the page is the same whether the mail went out or will be retried).
"""

from __future__ import annotations

import dataclasses
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from sqlalchemy import func, select, update

from db import transaction, utcnow
from db.audit import AuditEvent
from idp import mail
from idp.config import SmtpConfig
from idp.models import MailOutbox
from tests.idp.conftest import Browser, csrf, free_port
from tests.idp.test_registration import PASSWORD, _link, _register


def _outbox(idp: Any) -> list[MailOutbox]:
    with idp.sessions()() as s:
        return list(s.execute(select(MailOutbox)).scalars())


def _page_text(r: requests.Response) -> str:
    return re.sub(r'name="csrf_token" value="[^"]+"', "", r.text)


def test_mail_server_down_same_answer_for_every_address_and_the_link_arrives_later(
    idp_factory: Any, smtp_server: Any
) -> None:
    inbox, smtp_port = smtp_server
    dead = SmtpConfig(host="127.0.0.1", port=free_port(), timeout_seconds=2)  # nothing listens
    idp = idp_factory(smtp=dead)
    idp.add_user("known@example.org")  # verified
    answers = [_register(Browser(idp), a) for a in ("new@example.org", "known@example.org")]
    answers.append(_register(Browser(idp), "new@example.org"))  # unconfirmed: a new link, later
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert len({_page_text(r) for r in answers}) == 1  # no account enumeration (OWASP ASVS 2.5)

    rows = _outbox(idp)
    assert len(rows) == 1 and rows[0].attempts == 1 and "Connection refused" in rows[0].last_error
    assert b"new@example.org" not in rows[0].recipient_enc  # encrypted at rest
    assert b"verify?token=" not in rows[0].message_enc

    # the mail server is back; the retry is due: the background duty sends it
    with transaction(idp.sessions()) as s:
        s.execute(update(MailOutbox).values(next_attempt_at=utcnow()))
    up = dataclasses.replace(idp.config, smtp=SmtpConfig(host="127.0.0.1", port=smtp_port))
    assert mail.deliver_due(up, idp.keys, idp.sessions()) == 1
    assert _outbox(idp) == []  # a sent mail (it carries a link) is not kept
    browser = Browser(idp)
    assert browser.confirm_link(_link(inbox.wait_for("new@example.org"), "verify")).status_code == 200


def test_a_hanging_mail_server_holds_no_database_lock(idp_factory: Any) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts, never greets: smtplib waits for the banner until its timeout
    try:
        smtp = SmtpConfig(host="127.0.0.1", port=listener.getsockname()[1], timeout_seconds=4)
        idp = idp_factory(smtp=smtp)
        cid, secret = idp.add_client(name="Backend", grant_types=["client_credentials"], scope="permits:read")
        with ThreadPoolExecutor(1) as pool:
            registering = pool.submit(_register, Browser(idp), "slow@example.org")
            time.sleep(0.5)  # the registration is waiting for the mail server now
            started = time.monotonic()
            r = requests.post(
                f"{idp.url}/token",
                auth=(cid, secret),
                data={"grant_type": "client_credentials", "scope": "permits:read"},
                timeout=30,
            )
            waited = time.monotonic() - started
            assert r.status_code == 200
            assert not registering.done()
            assert waited < 2.0, f"the token request waited {waited:.1f} s for the mail server"
            assert registering.result().status_code == 200
        assert len(_outbox(idp)) == 1  # kept for a retry
    finally:
        listener.close()


def test_undeliverable_mail_is_given_up_after_the_last_attempt_and_audited(idp_factory: Any) -> None:
    dead = SmtpConfig(host="127.0.0.1", port=free_port(), timeout_seconds=2)
    idp = idp_factory(smtp=dead)
    with transaction(idp.sessions()) as s:
        mail_id = mail.queue(s, idp.keys, "gone@example.org", "Subject", "Body")
    with transaction(idp.sessions()) as s:
        s.execute(update(MailOutbox).values(attempts=mail.MAX_ATTEMPTS - 1))
    assert mail.deliver_due(idp.config, idp.keys, idp.sessions()) == 0
    assert _outbox(idp) == []
    with idp.sessions()() as s:
        given_up = s.execute(select(AuditEvent).where(AuditEvent.action == "mail.give_up")).scalars().all()
    assert [(e.subject, e.outcome) for e in given_up] == [(mail_id, "failure")]


def test_mail_is_not_sent_when_the_request_rolls_back(idp_factory: Any, smtp_server: Any) -> None:
    inbox, port = smtp_server
    idp = idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=port))
    r = _register(Browser(idp), "weak@example.org", password="short")
    assert r.status_code == 400
    assert _outbox(idp) == [] and inbox.messages == []


def test_double_submitted_registration_answers_both_without_an_error(
    idp_factory: Any, smtp_server: Any
) -> None:
    _inbox, port = smtp_server
    idp = idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=port))
    for n in range(4):
        email = f"twice{n}@example.org"
        browsers = [Browser(idp), Browser(idp)]
        pages = [b.get(f"{idp.url}/register") for b in browsers]
        barrier = threading.Barrier(2)

        def submit(i: int, email: str = email) -> int:
            barrier.wait()
            form = {
                "csrf_token": csrf(pages[i].text),
                "email": email,
                "password": PASSWORD,
                "password2": PASSWORD,
            }
            return browsers[i].post(f"{idp.url}/register", form).status_code

        with ThreadPoolExecutor(2) as pool:
            assert sorted(pool.map(submit, [0, 1])) == [200, 200]
    with idp.sessions()() as s:
        from idp.models import Account

        assert s.execute(select(func.count()).select_from(Account)).scalar() == 4


def test_an_address_with_an_internationalised_domain_gets_its_link_rfc5891(
    idp_factory: Any, smtp_server: Any
) -> None:
    inbox, port = smtp_server
    idp = idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=port))
    assert _register(Browser(idp), "anna@müller-bau.de").status_code == 200
    msg = inbox.wait_for("anna@xn--mller-bau-q9a.de")  # the IDNA A-label every server takes
    assert Browser(idp).confirm_link(_link(msg, "verify")).status_code == 200
    assert _outbox(idp) == []
