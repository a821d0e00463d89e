"""Mails go through the database outbox: queued with their link, sent after the commit, retried.

A slow or dead mail server must hold no database lock, lose no link and not tell which
addresses have accounts (the page is the same whether the mail went out or will be retried).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from aiosmtpd.controller import Controller
from sqlalchemy import func, select, update

from db import transaction, utcnow
from db.audit import AuditEvent
from idp import mail
from idp.config import SmtpConfig
from idp.models import MailOutbox
from tests.idp.conftest import Browser, _Inbox, csrf, free_port
from tests.idp.test_registration import PASSWORD, _link, _register


def _outbox(idp: Any) -> list[MailOutbox]:
    with idp.sessions()() as s:
        return list(s.execute(select(MailOutbox)).scalars())


def _page_text(r: requests.Response) -> str:
    return re.sub(r'name="csrf_token" value="[^"]+"', "", r.text)


def _wait(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_mail_server_down_same_answer_for_every_address_and_the_link_arrives_later(idp_factory: Any) -> None:
    port = free_port()
    idp = idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=port, timeout_seconds=2))  # nothing listens
    idp.add_user("known@example.org")  # verified
    idp.add_user("pending@example.org", verified=False)  # unconfirmed: a link to finish, later
    answers = [
        _register(Browser(idp), a) for a in ("new@example.org", "known@example.org", "pending@example.org")
    ]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert len({_page_text(r) for r in answers}) == 1  # no account enumeration (OWASP ASVS 2.5)

    # the mail thread tried each once (a row's attempt is counted when claimed, its error after)
    _wait(lambda: [(r.attempts, bool(r.last_error)) for r in _outbox(idp)] == [(1, True)] * 2)
    for row in _outbox(idp):
        assert "Connection refused" in row.last_error and row.next_attempt_at > utcnow()  # back-off
        assert b"@example.org" not in row.recipient_enc  # encrypted at rest
        assert b"?token=" not in row.message_enc

    # the mail server is back and the retry is due: the mail thread sends it
    inbox = _Inbox()
    server = Controller(inbox, hostname="127.0.0.1", port=port)
    server.start()
    try:
        with transaction(idp.sessions()) as s:
            s.execute(update(MailOutbox).values(next_attempt_at=utcnow()))
        msg = inbox.wait_for("new@example.org", timeout=15)
        _wait(lambda: _outbox(idp) == [])  # a sent mail (it carries a link) is not kept
        assert Browser(idp).confirm_link(_link(msg, "verify"), PASSWORD).status_code == 200
        assert "/reset?token=" in inbox.wait_for("pending@example.org").get_content()
    finally:
        server.stop()


def test_a_hanging_mail_server_delays_no_page_and_holds_no_database_lock(idp_factory: Any) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts, never greets: smtplib waits for the banner until its timeout
    try:
        smtp = SmtpConfig(host="127.0.0.1", port=listener.getsockname()[1], timeout_seconds=4)
        idp = idp_factory(smtp=smtp)
        idp.add_user("known@example.org")
        cid, secret = idp.add_client(name="Backend", grant_types=["client_credentials"], scope="permits:read")

        def timed(fn: Any) -> tuple[int, float]:
            started = time.monotonic()
            status = fn().status_code
            return status, time.monotonic() - started

        assert timed(lambda: _register(Browser(idp), "slow@example.org"))[1] < 2.0
        # the mail thread now waits for the mail server; nobody else does
        token = timed(
            lambda: requests.post(
                f"{idp.url}/token",
                auth=(cid, secret),
                data={"grant_type": "client_credentials", "scope": "permits:read"},
                timeout=30,
            )
        )
        assert token[0] == 200 and token[1] < 2.0, token
        # a known and an unknown address take the same time (no enumeration by timing)
        for email in ("known@example.org", "nobody@example.org"):
            b = Browser(idp)
            page = b.get(f"{idp.url}/forgot")
            status, took = timed(
                lambda b=b, page=page, email=email: b.post(
                    f"{idp.url}/forgot", {"csrf_token": csrf(page.text), "email": email}
                )
            )
            assert status == 200 and took < 1.0, (email, took)
        _wait(lambda: any(r.attempts >= 1 and r.last_error for r in _outbox(idp)))  # timed out, kept
    finally:
        listener.close()


def test_undeliverable_mail_is_given_up_after_the_last_attempt_and_audited(idp_factory: Any) -> None:
    dead = SmtpConfig(host="127.0.0.1", port=free_port(), timeout_seconds=2)
    idp = idp_factory(smtp=dead)
    with transaction(idp.sessions()) as s:
        mail_id = mail.queue_mail(s, idp.keys, "gone@example.org", "Subject", "Body")
    with transaction(idp.sessions()) as s:
        s.execute(update(MailOutbox).values(attempts=mail.MAX_ATTEMPTS - 1))
    assert mail.deliver_due(idp.config, idp.keys, idp.sessions()) == 0
    assert _outbox(idp) == []
    with idp.sessions()() as s:
        given_up = s.execute(select(AuditEvent).where(AuditEvent.action == "mail.give_up")).scalars().all()
    assert [(e.subject, e.outcome) for e in given_up] == [(mail_id, "failure")]


def test_a_refused_recipients_address_stays_out_of_the_outbox_log_and_audit_gdpr_17(
    idp_factory: Any, smtp_server: Any
) -> None:
    """The relay's 550 quotes the address; what cityid keeps of a failure (the outbox row in
    clear, the log, the audit entry erasure cannot change) must not."""
    inbox, port = smtp_server
    inbox.refused.add("anna.mueller@example.org")
    idp = idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=port, timeout_seconds=2))
    idp.app.extensions["cityid"].courier.stop()  # delivered here, step by step
    with transaction(idp.sessions()) as s:
        mail_id = mail.queue_mail(s, idp.keys, "anna.mueller@example.org", "Subject", "Body")
    assert mail.deliver_due(idp.config, idp.keys, idp.sessions()) == 0
    (row,) = _outbox(idp)
    assert row.last_error == "could not send mail: recipient refused (550)"
    with transaction(idp.sessions()) as s:
        s.execute(update(MailOutbox).values(attempts=mail.MAX_ATTEMPTS - 1, next_attempt_at=utcnow()))
    assert mail.deliver_due(idp.config, idp.keys, idp.sessions()) == 0
    with idp.sessions()() as s:
        (given_up,) = s.execute(select(AuditEvent).where(AuditEvent.action == "mail.give_up")).scalars().all()
    assert given_up.subject == mail_id and "anna" not in given_up.reason and "550" in given_up.reason


def test_mail_is_not_sent_when_the_request_rolls_back(idp_factory: Any, smtp_server: Any) -> None:
    """A request that queued a mail and then fails (status >= 400) stores and sends nothing."""
    from flask import Response

    inbox, port = smtp_server
    idp = idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=port))
    for status in (400, 200):
        with idp.app.test_request_context("/anything", method="POST"):
            mail.send_after_commit(f"s{status}@example.org", "Subject", "Body")
            idp.app.process_response(Response(status=status))  # the after-request hooks: uow
    inbox.wait_for("s200@example.org")  # the one that committed
    time.sleep(0.3)
    assert not any("s400@" in m["To"] for m in inbox.messages) and _outbox(idp) == []


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
    assert Browser(idp).confirm_link(_link(msg, "verify"), PASSWORD).status_code == 200
    _wait(lambda: _outbox(idp) == [])  # deleted once the SMTP conversation has ended


@pytest.mark.parametrize(
    "address",
    [
        "victim@exa\u200bmple.org",  # zero-width space, dropped by IDNA's mapping
        "victim@exam\u00adple.org",  # soft hyphen, likewise
        "victim@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.org",  # full-width letters, folded to ASCII
        "a<b@example.org",  # a mail header would read the address in the angle brackets
        "a,b@example.org",
        "=?utf-8?q?victim?=@example.org",  # RFC 2047 encoded-words, decoded by header parsers
        "victim@=?utf-8?q?example.org?=",
        "anna@xn--mller-kva.de",  # the xn-- spelling of müller.de: one mailbox, two addresses
        "victim@example.org.",  # a trailing dot
    ],
)
def test_addresses_that_would_reach_another_mailbox_are_refused(idp_factory: Any, address: str) -> None:
    idp = idp_factory()
    r = _register(Browser(idp), address)
    assert r.status_code == 400
    assert _outbox(idp) == []


def test_steady_new_mail_does_not_starve_the_retries(idp_factory: Any) -> None:
    idp = idp_factory()  # mails go to the data dir's outbox directory
    with transaction(idp.sessions()) as s:
        left = mail.queue_mail(s, idp.keys, "left@example.org", "left behind", "by a worker that died")
    courier = mail.Courier(idp.config, idp.keys, idp.sessions(), interval=0.5)
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and any(r.id == left for r in _outbox(idp)):
            with transaction(idp.sessions()) as s:
                fresh = mail.queue_mail(s, idp.keys, "new@example.org", "new", "mail")
            courier.post(fresh)  # a new mail every 0.2 s: the queue never waits a whole interval
            time.sleep(0.2)
        assert not any(r.id == left for r in _outbox(idp)), "the retry never ran"
    finally:
        courier.stop()


def test_an_address_a_mail_header_would_rewrite_is_not_sent_anywhere_else(idp_factory: Any) -> None:
    idp = idp_factory()
    with pytest.raises(mail.MailError):
        mail.send(idp.config, "=?utf-8?q?victim?=@example.org", "s", "b")  # stored before the check


def test_an_erasure_removes_the_mails_still_waiting_for_the_account_gdpr_17(idp_factory: Any) -> None:
    from idp.privacy import erase_account

    idp = idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=free_port(), timeout_seconds=2))  # down
    account_id = idp.add_user("karl@example.org")
    b = Browser(idp)
    for email in ("karl@example.org", "nobody@example.org"):
        page = b.get(f"{idp.url}/forgot")
        assert b.post(f"{idp.url}/forgot", {"csrf_token": csrf(page.text), "email": email}).status_code == 200
    with transaction(idp.sessions()) as s:  # a mail to an address only, no account: kept
        mail.queue_mail(s, idp.keys, "hallo@example.org", "Hallo", "Text")
    _wait(lambda: len(_outbox(idp)) == 2)
    assert [r.account_id for r in _outbox(idp)].count(account_id) == 1
    with transaction(idp.sessions()) as s:
        erase_account(s, idp.keys, idp.key_cache, issuer=idp.url, account_id=account_id)
    assert [r.account_id for r in _outbox(idp)] == [None]  # the reset link to karl is gone unsent


def test_a_mail_sent_again_after_a_crash_is_the_same_message(db_sessions: Any, tmp_path: Any) -> None:
    """bench/faults.py: a worker killed after the mail server took a message but before the
    outbox row was removed sends it again when the lease ends (at least once: 2 of 1,424 mails
    under kill -9). The repeat carries the same Message-ID, so mail servers and programs that
    drop a Message-ID they have seen (RFC 5322 §3.6.4) show the citizen one message."""
    from email import message_from_bytes

    from idp.instance import InstanceKeys
    from tests.idp.conftest import make_config

    received: list[bytes] = []

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope.content)
            return "250 OK"

    port = free_port()
    ctl = Controller(Sink(), hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        cfg = make_config(tmp_path, "", "http://127.0.0.1:9", smtp=SmtpConfig(host="127.0.0.1", port=port))
        keys = InstanceKeys.from_config(cfg)
        with transaction(db_sessions) as s:
            mail_id = mail.queue_mail(s, keys, "anna@example.org", "Your link", "https://example.org/x")

        class Died(Exception):
            pass

        real, calls = mail.transaction, []

        def dying(sessions: Any) -> Any:  # the second transaction is the bookkeeping after the send
            calls.append(1)
            if len(calls) == 2:
                raise Died
            return real(sessions)

        mail.transaction = dying  # type: ignore[assignment]
        try:
            with pytest.raises(Died):
                mail.deliver(cfg, keys, db_sessions, mail_id)
        finally:
            mail.transaction = real  # type: ignore[assignment]
        assert len(received) == 1
        with transaction(db_sessions) as s:  # the dead worker's lease is over
            s.execute(update(MailOutbox).values(next_attempt_at=utcnow()))
        assert mail.deliver(cfg, keys, db_sessions, mail_id)
    finally:
        ctl.stop()
    ids = [message_from_bytes(m)["Message-ID"] for m in received]
    assert len(ids) == 2 and ids[0] == ids[1] == f"<{mail_id}@cityid>"
