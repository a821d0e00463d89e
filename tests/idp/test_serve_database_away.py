"""bench/faults.py: an instance restarted (after kill -9) while PostgreSQL restarts must come up
once the database is back, not crash-loop and exit: its worker waits for the database."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.conftest import PG_URL, _pg_admin
from tests.idp.conftest import free_port
from tests.idp.serve_process import serving, tail, up
from tests.idp.test_processes import cityid, write_config

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (CI sets CITYID_TEST_POSTGRES_URL)"),
    pytest.mark.parametrize("db_url", ["postgresql"], indirect=True),
]


def _allow(name: str, allowed: bool) -> None:
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
        if not allowed:  # what a restart does: every backend ends, new connections are refused
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": name}
            )
    admin.dispose()


def test_a_worker_started_while_the_database_is_away_waits_for_it(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    write_config(data, db_url, url)
    cityid(data, "init")
    name = db_url.rsplit("/", 1)[1]
    log = tmp_path / "serve.log"
    try:
        with serving(data, port, log) as proc:
            assert up(url), tail(log)
            worker = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
            _allow(name, False)
            os.kill(worker, signal.SIGKILL)  # granian starts a new worker: the database is away
            time.sleep(6)
            assert proc.poll() is None, "the server gave up: " + tail(log)
            _allow(name, True)
            assert up(url), tail(log)
    finally:
        _allow(name, True)


def test_serve_started_while_the_database_refuses_connections_comes_up_with_it(
    db_url: str, tmp_path: Path
) -> None:
    """bench/faults.py: an instance restarted during the PostgreSQL restart exited 2 (its start-up
    checks could not connect); it waits for the database instead."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    write_config(data, db_url, url)
    cityid(data, "init")
    name = db_url.rsplit("/", 1)[1]
    _allow(name, False)
    log = tmp_path / "serve.log"
    try:
        with serving(data, port, log, workers=None) as proc:
            time.sleep(5)
            assert proc.poll() is None, "serve gave up: " + tail(log)
            _allow(name, True)
            assert up(url), tail(log)
    finally:
        _allow(name, True)
