"""Issue 19, graceful stop for a rolling restart: ``GET /health`` for the load balancer, and
`cityid serve --drain-seconds N`: on SIGTERM ``/health`` answers 503 for N seconds while every
other request is still served, then the graceful stop, exit 0 (idp.health, idp.serve)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import event

from idp import health
from tests.idp.conftest import free_port
from tests.idp.serve_process import serving, tail, up
from tests.idp.test_processes import cityid, write_config


def test_health_answers_200_ok_without_session_cookie_or_database_query(idp: Any) -> None:
    engine = idp.app.extensions["cityid"].engine
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        r = idp.app.test_client().get("/health")
        head = idp.app.test_client().head("/health")
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert r.status_code == 200 and r.data == b"ok\n"
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.headers["Cache-Control"] == "no-store"  # RFC 9111 §5.2.2.5: no cache hides a drain
    assert "Set-Cookie" not in r.headers
    assert r.headers["X-Content-Type-Options"] == "nosniff"  # the headers every answer gets
    assert head.status_code == 200 and head.data == b""
    assert statements == []


def test_health_answers_503_while_the_process_drains(idp: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(health, "_flag", None)
    health.start_drain()
    r = idp.app.test_client().get("/health")
    assert r.status_code == 503 and r.data == b"draining\n"  # RFC 9110 §15.6.4
    assert r.headers["Retry-After"] == "5"  # RFC 9110 §10.2.3
    # every other request is served as before
    assert idp.app.test_client().get("/jwks.json").status_code == 200


def test_health_checks_are_their_own_metrics_group_apart_from_the_server_error_alert() -> None:
    """A drain's 503s are counted under ``health``, which the 5xx alert leaves out (docs/insights.md)."""
    from idp.insights.metrics import group_of

    assert group_of("/health") == "health"


def _instance(tmp_path: Path, db_url: str) -> tuple[int, str, Path]:
    """An initialised instance's data directory for `cityid serve` on a free port."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    write_config(data, db_url, url)
    cityid(data, "init")
    return port, url, data


def _token(url: str, client: dict[str, str]) -> requests.Response:
    return requests.post(
        f"{url}/token",
        auth=(client["client_id"], client["client_secret"]),
        data={"grant_type": "client_credentials"},
        timeout=10,
    )


def test_sigterm_drains_health_503_while_token_requests_answer_200_then_exits_0(
    db_url: str, tmp_path: Path
) -> None:
    port, url, data = _instance(tmp_path, db_url)
    out = cityid(
        data, "client", "add", "--name", "Machine", "--grant-type", "client_credentials", "--json"
    ).stdout
    client = json.loads(out)
    log = tmp_path / "serve.log"
    with serving(data, port, log, extra=("--drain-seconds", "4")) as proc:
        assert up(url), tail(log)
        assert _token(url, client).status_code == 200, tail(log)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        health_seen, tokens = [], []
        while time.monotonic() - sent < 3:  # inside the drain
            health_seen.append(requests.get(f"{url}/health", timeout=5).status_code)
            tokens.append(_token(url, client).status_code)
            time.sleep(0.1)
        assert health_seen[-1] == 503 and set(health_seen[1:]) == {503}, health_seen
        assert set(tokens) == {200}, tokens
        assert proc.wait(timeout=30) == 0, tail(log)
        assert time.monotonic() - sent >= 4  # the drain ran its length before the stop


def test_a_second_sigterm_during_the_drain_stops_at_once_with_exit_0(tmp_path: Path) -> None:
    """The operator who does not want to wait (or a supervisor's second signal): the drain is
    cut short, the graceful stop is the same."""
    port, url, data = _instance(tmp_path, f"sqlite:///{tmp_path / 'cityid.sqlite3'}")
    log = tmp_path / "serve.log"
    with serving(data, port, log, extra=("--drain-seconds", "60")) as proc:
        assert up(url), tail(log)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while requests.get(f"{url}/health", timeout=5).status_code != 503:
            assert time.monotonic() < deadline, tail(log)
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert proc.wait(timeout=30) == 0, tail(log)
        assert time.monotonic() - sent < 30  # not the 60 s of the drain


def test_gunicorn_drains_too_health_503_while_requests_are_served_then_exits_0(tmp_path: Path) -> None:
    """`cityid serve --server gunicorn`: the same drain in gunicorn's master (idp.serve)."""
    port, url, data = _instance(tmp_path, f"sqlite:///{tmp_path / 'cityid.sqlite3'}")
    log = tmp_path / "serve.log"
    with serving(data, port, log, extra=("--server", "gunicorn", "--drain-seconds", "3")) as proc:
        assert up(url), tail(log)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        seen = []
        while time.monotonic() - sent < 2:
            seen.append(
                (
                    requests.get(f"{url}/health", timeout=5).status_code,
                    requests.get(f"{url}/jwks.json", timeout=5).status_code,
                )
            )
            time.sleep(0.1)
        assert seen[-1] == (503, 200) and {h for h, _ in seen[1:]} == {503}, seen
        assert {j for _, j in seen} == {200}, seen
        assert proc.wait(timeout=30) == 0, tail(log)
        assert time.monotonic() - sent >= 3
