"""A `cityid` command started while PostgreSQL restarts or fails over waits for it (issue 19).

The database is put out of reach as tests/idp/test_serve_database_away.py does it (connections
refused, every backend ended, as during `pg_ctl restart`) and let back in 1.5 s after the command
has started; the command must wait and succeed, not exit 2 at once.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import PG_URL
from tests.idp.test_processes import cityid, write_config
from tests.idp.test_serve_database_away import _allow

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (CI sets CITYID_TEST_POSTGRES_URL)"),
    pytest.mark.parametrize("db_url", ["postgresql"], indirect=True),
]


def _instance(db_url: str, tmp_path: Path) -> tuple[Path, str]:
    data = tmp_path / "data"
    write_config(data, db_url, "https://login.example.org")
    cityid(data, "init")
    return data, db_url.rsplit("/", 1)[1]


def test_a_command_started_while_the_database_restarts_waits_for_it_issue_19(
    db_url: str, tmp_path: Path
) -> None:
    data, name = _instance(db_url, tmp_path)
    _allow(name, False)
    back = threading.Timer(1.5, _allow, (name, True))
    started = time.monotonic()
    back.start()
    try:
        r = cityid(data, "audit", "verify", "--json", check=False)
    finally:
        back.cancel()
        back.join()
        _allow(name, True)
    waited = time.monotonic() - started
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["ok"] is True
    assert waited >= 1.5  # it waited for the database rather than failing at once


def test_a_command_whose_database_stays_away_ends_with_exit_code_2_not_a_traceback(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cli

    data, name = _instance(db_url, tmp_path)
    monkeypatch.setattr(cli, "CLI_DATABASE_WAIT_SECONDS", 1.0)
    _allow(name, False)
    try:
        r = cityid(data, "audit", "verify", "--json", check=False)
    finally:
        _allow(name, True)
    assert r.returncode == 2
    assert "the database cannot be used" in json.loads(r.stdout)["error"]
