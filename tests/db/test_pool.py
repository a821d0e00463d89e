"""PostgreSQL connections that sat in the pool are pinged before use; a database restart (here:
every backend of the pool terminated) costs no request once the connections have been idle."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

import db
from db import make_engine
from tests.conftest import PG_URL, _pg_admin

pytestmark = pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (CI sets CITYID_TEST_POSTGRES_URL)")


def _terminate_backends(pids: list[int]) -> None:
    admin = _pg_admin()
    with admin.connect() as conn:
        for pid in pids:
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    admin.dispose()


def _pooled_backend_pids(engine: object, n: int) -> list[int]:
    conns = [engine.connect() for _ in range(n)]  # type: ignore[attr-defined]
    pids = [int(c.execute(text("SELECT pg_backend_pid()")).scalar()) for c in conns]
    for c in conns:
        c.close()  # back to the pool
    return pids


def test_connections_idle_in_the_pool_are_pinged_and_replaced_after_a_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)
    engine = make_engine(PG_URL)
    try:
        pids = _pooled_backend_pids(engine, 3)
        _terminate_backends(pids)
        for _ in range(3):  # every pooled connection is dead: each is found by the ping, none fails
            with engine.connect() as conn:
                assert int(conn.execute(text("SELECT pg_backend_pid()")).scalar()) not in pids
    finally:
        engine.dispose()


def test_recently_used_connections_are_not_pinged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 3600.0)
    engine = make_engine(PG_URL)
    try:
        (pid,) = _pooled_backend_pids(engine, 1)
        _terminate_backends([pid])
        # no ping: the dead connection is handed out and the statement fails (one request) ...
        with pytest.raises(OperationalError), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        # ... and the pool is replaced: the next one works
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
