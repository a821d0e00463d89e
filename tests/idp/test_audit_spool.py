"""Issue 19 (2): audit records of a refused request are not lost while the database is down."""

from __future__ import annotations

import shutil

import requests
from sqlalchemy import select

from db.audit import AuditEvent, verify
from idp import audit_spool
from tests.idp.conftest import Idp
from tests.idp.test_unit_of_work import _failing_commits


def test_refusal_records_wait_in_the_spool_while_the_database_is_down_and_are_written_once(
    idp: Idp,
) -> None:
    cid, _secret = idp.add_client(name="Fahrplan", grant_types=["client_credentials"], scope="read")
    undo = _failing_commits(idp, 1)  # the refusal's own audit transaction cannot commit
    try:
        r = requests.post(
            f"{idp.url}/token", data={"grant_type": "client_credentials"}, auth=(cid, "wrong"), timeout=10
        )
    finally:
        undo()
    assert r.status_code == 500
    spooled = sorted(audit_spool.spool_dir(idp.config.data_dir).glob("*.json"))
    assert len(spooled) == 1
    kept = spooled[0].with_name("copy.keep")
    shutil.copy(spooled[0], kept)

    assert audit_spool.replay(idp.sessions(), idp.config.data_dir) == 1
    shutil.copy(kept, spooled[0])  # a crash between the commit and the file's removal
    assert audit_spool.replay(idp.sessions(), idp.config.data_dir) == 0

    with idp.sessions()() as s:
        rows = s.execute(
            select(AuditEvent.outcome, AuditEvent.details).where(AuditEvent.action == "token.refuse")
        ).all()
        assert verify(s).ok
    assert len(rows) == 1
    outcome, details = rows[0]
    assert outcome == "denied" and '"written_late": true' in details and cid in details
    assert not list(audit_spool.spool_dir(idp.config.data_dir).glob("*.json"))


def _lost_connection_route(idp: Idp) -> list[int]:
    """A page that queues a refusal's audit record and on_failure work, then meets a database
    connection the server dropped (both attempts: the database stays away)."""
    from flask import g
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from idp import uow

    calls: list[int] = []

    def lost() -> str:
        calls.append(1)
        uow.record(action="test.refuse", outcome="denied", actor="anonymous", subject="", reason="x")
        uow.on_failure(lambda s: s.execute(text("SELECT 1")) and calls.append(100))
        assert "_db_commit_attempted" not in g
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    idp.app.add_url_rule("/test-lost-connection", "test_lost", lost, methods=["POST"])
    return calls


def _refusals(idp: Idp) -> list[str]:
    with idp.sessions()() as s:
        return list(
            s.execute(
                select(AuditEvent.outcome).where(AuditEvent.action == "test.refuse").order_by(AuditEvent.seq)
            ).scalars()
        )


def test_last_attempt_after_a_lost_connection_keeps_its_audit_records_and_refusal_work(idp: Idp) -> None:
    """Every security decision is audited: a request repeated once after a lost connection
    (idp.retry) that meets it again still writes its records and on_failure work, as any refusal."""
    calls = _lost_connection_route(idp)
    r = requests.post(f"{idp.url}/test-lost-connection", data={"a": "b"}, timeout=10)
    assert r.status_code == 503 and "X-Cityid-Retry" not in r.headers
    assert calls.count(1) == 2  # repeated once
    assert calls.count(100) == 1  # the last attempt's refusal work ran
    assert _refusals(idp) == ["denied"]  # the first attempt's were dropped, the last's written


def test_a_request_that_cannot_be_repeated_keeps_its_audit_records_and_no_internal_header(idp: Idp) -> None:
    """A chunked body cannot be kept for a repeat: its one attempt is its last, so its records are
    written and the internal repeat header never reaches the client."""
    calls = _lost_connection_route(idp)
    r = requests.post(f"{idp.url}/test-lost-connection", data=iter([b"a=b"]), timeout=10)
    assert r.status_code == 503 and "X-Cityid-Retry" not in r.headers
    assert calls.count(1) == 1
    assert _refusals(idp) == ["denied"]
