"""cityid behind PgBouncer in transaction pooling mode (docs/scaling.md).

PgBouncer 1.18 (Debian 12) hands each transaction any server connection and does not carry
server-side prepared statements across them; psycopg prepares a statement after its fifth
execution on a connection, so without ``?prepare_threshold=none`` on the database URL requests
fail with ``prepared statement "_pg3_0" does not exist`` (bench/faults.py --pgbouncer).
"""

from __future__ import annotations

import shutil

import pytest

from bench.faults import profile_for, run
from db import make_engine
from tests.conftest import PG_URL

pytestmark = pytest.mark.skipif(not PG_URL, reason="PostgreSQL tests (CI sets CITYID_TEST_POSTGRES_URL)")


def test_prepare_threshold_on_the_database_url_reaches_psycopg_and_leaves_the_url() -> None:
    engine = make_engine(PG_URL + "?prepare_threshold=none")
    try:
        assert "prepare_threshold" not in engine.url.query
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection.prepare_threshold is None  # type: ignore[union-attr]
    finally:
        engine.dispose()


def test_the_workload_through_pgbouncer_in_transaction_mode_has_no_error() -> None:
    assert shutil.which("pgbouncer"), "pgbouncer (Debian package) expected: scripts/system-deps.sh"
    result = run(profile_for("pooler", 0), pgbouncer="?prepare_threshold=none")
    assert result["requests"]["server_error_5xx"] == {}, result["errors_sample"]
    assert result["requests"]["ok"].get("refresh", 0) > 10 and result["requests"]["ok"].get("login", 0) > 3
    assert result["ok"], result["invariants"]
