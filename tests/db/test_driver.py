"""db.driver.Prepared runs statements on the driver connection exactly as Session.execute would:
bind values through their column types (aware UTC datetimes), values written into the statement,
RETURNING rows, inside the session's transaction."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from db import driver, transaction
from db.audit import AuditEvent, AuditHead

EVENT = AuditEvent.__table__
HEAD = AuditHead.__table__
COLUMNS = ["at", "actor", "action", "outcome", "subject", "reason", "details", "salt"]
COLUMNS += ["party_commitment", "pseudonymised", "prev_hash", "hash"]
INSERT = driver.Prepared(insert(EVENT).returning(EVENT.c.seq), COLUMNS)
SELECT_HEAD = driver.Prepared(select(HEAD.c.last_hash).where(HEAD.c.id == 1), [])
UPDATE_HEAD = driver.Prepared(update(HEAD).where(HEAD.c.id == 1).values(last_hash=bindparam("h")), [])


def _row(at: dt.datetime, n: int) -> dict[str, object]:
    return {
        "at": at,
        "actor": "a",
        "action": "test.driver",
        "outcome": "info",
        "subject": "s",
        "reason": "",
        "details": "{}",
        "salt": "0" * 32,
        "party_commitment": "c" * 64,
        "pseudonymised": False,
        "prev_hash": "0" * 64,
        "hash": f"{n:064x}",
    }


def test_bind_values_go_through_their_types_and_read_back_alike(db_sessions: sessionmaker[Session]) -> None:
    # a non-UTC aware datetime is stored as the same instant in UTC, as the ORM stores it
    at = dt.datetime(2026, 11, 24, 4, 5, 6, 789012, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    with transaction(db_sessions) as s:
        (seq,) = INSERT.run(s, _row(at, 1))[0]
        s.add(AuditEvent(**{**_row(at, 2), "hash": f"{2:064x}"}))  # the ORM's way, for comparison
    with db_sessions() as s:
        rows = s.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars().all()
        assert rows[0].seq == seq
        assert rows[0].at == rows[1].at == at
        assert rows[0].at.tzinfo is not None and rows[0].pseudonymised is False
        # stored alike, not just read back alike: SQL compares the stored values (on SQLite, text)
        raw = s.connection().exec_driver_sql("SELECT at FROM audit_event ORDER BY seq").all()
        assert raw[0][0] == raw[1][0]


def test_values_written_into_the_statement_are_bound_and_rollback_undoes_the_writes(
    db_sessions: sessionmaker[Session],
) -> None:
    with transaction(db_sessions) as s:
        s.add(AuditHead(id=1, last_hash="0" * 64, last_seq=None))
    with db_sessions() as s:
        UPDATE_HEAD.run(s, {"h": "f" * 64})  # `id == 1` is a value the statement carries
        assert SELECT_HEAD.run(s, {}) == [("f" * 64,)]
        s.rollback()  # the driver statements ran in the session's transaction
    with db_sessions() as s:
        assert SELECT_HEAD.run(s, {}) == [("0" * 64,)]


def test_a_missing_value_is_an_error_not_a_null(db_sessions: sessionmaker[Session]) -> None:
    row = _row(dt.datetime.now(dt.UTC), 3)
    del row["hash"]
    with db_sessions() as s, pytest.raises(KeyError):
        INSERT.run(s, row)
