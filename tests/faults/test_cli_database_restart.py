"""A `cityid` command started while PostgreSQL restarts or fails over waits for it (issue 19).

The database is put out of reach by a TCP forwarder in front of the real PostgreSQL that starts
listening only after the command has started (connection refused until then, as during `pg_ctl
restart`); the command must wait and succeed, not exit 2 at once.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from bench._server import _fresh_database, free_port
from cli import main as cli_main
from tests.conftest import PG_URL

pytestmark = pytest.mark.skipif(not PG_URL, reason="PostgreSQL tests (CI sets CITYID_TEST_POSTGRES_URL)")


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _forward(listener: socket.socket, target: tuple[str, int]) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        upstream = socket.create_connection(target)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()


@pytest.fixture
def database() -> Iterator[str]:
    url, drop = _fresh_database(PG_URL)
    try:
        yield url
    finally:
        drop()


def _env(url: str) -> dict[str, str]:
    return {"CITYID_DATABASE_URL": url, "CITYID_ISSUER": "https://login.example.org"}


def test_a_command_started_while_the_database_restarts_waits_for_it_issue_19(
    tmp_path: Path, database: str
) -> None:
    data = tmp_path / "data"
    runner = CliRunner()
    r = runner.invoke(cli_main, ["init", "--data-dir", str(data), "--json"], env=_env(database))
    assert r.exit_code == 0, r.output
    port = free_port()  # nothing listens there yet: connection refused, as during a restart
    away = make_url(database).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    real = make_url(database)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def come_back() -> None:
        listener.bind(("127.0.0.1", port))
        listener.listen(16)
        _forward(listener, (real.host or "127.0.0.1", real.port or 5432))

    timer = threading.Timer(1.5, lambda: threading.Thread(target=come_back, daemon=True).start())
    started = time.monotonic()
    timer.start()
    try:
        r = runner.invoke(cli_main, ["audit", "verify", "--data-dir", str(data), "--json"], env=_env(away))
    finally:
        timer.cancel()
        listener.close()
    waited = time.monotonic() - started
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ok"] is True
    assert waited >= 1.5  # it waited for the database rather than failing at once


def test_a_command_whose_database_stays_away_ends_with_exit_code_2_not_a_traceback(
    tmp_path: Path, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cli

    data = tmp_path / "data"
    runner = CliRunner()
    assert runner.invoke(cli_main, ["init", "--data-dir", str(data)], env=_env(database)).exit_code == 0
    away = make_url(database).set(host="127.0.0.1", port=free_port()).render_as_string(hide_password=False)
    monkeypatch.setattr(cli, "CLI_DATABASE_WAIT_SECONDS", 1.0)
    r = runner.invoke(cli_main, ["audit", "verify", "--data-dir", str(data), "--json"], env=_env(away))
    assert r.exit_code == 2
    assert "the database cannot be used" in json.loads(r.stdout)["error"]
