"""Shared bench helpers: a fresh instance served by `cityid serve`, pinned to one core."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
# `cityid` as the console script runs it (cli imported as a module, not as __main__: a command
# module that imports cli would otherwise load a second copy of it)
CLI = [sys.executable, "-c", "import cli; cli.main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(data: Path, *args: str, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(
        [*CLI, *args, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return res.stdout


# Appended to every wrk script: one JSON line with what the benches report.
WRK_REPORT = """
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\": %d, \\"errors\\": %d, \\"non2xx\\": %d, \\"p50_ms\\": %.2f, \\"p99_ms\\": %.2f, \\"duration_s\\": %.3f}\\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.duration / 1e6))
end
"""


def wrk(
    url: str, script: str, *, seconds: int, connections: int, threads: int = 2, core: int = 1
) -> dict[str, Any]:
    """Run wrk (Debian package ``wrk``) pinned to ``core`` with ``script`` (Lua, without a ``done``
    function); returns requests, errors, non2xx, p50_ms, p99_ms, duration_s and per_s."""
    import json
    import re

    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script + WRK_REPORT)
    try:
        res = subprocess.run(
            [
                "taskset",
                "-c",
                str(core),
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                fh.name,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
    finally:
        os.unlink(fh.name)
    m = re.search(r"^JSON (\{.*\})$", res.stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk reported nothing: {res.stdout[-400:]} {res.stderr[-400:]}")
    data: dict[str, Any] = json.loads(m.group(1))
    data["per_s"] = round(data["requests"] / data["duration_s"], 1)
    return data


def machine_client(data: Path, scope: str) -> tuple[str, str]:
    """A client-credentials client (RFC 6749 §4.4): its id and secret."""
    import json

    out = json.loads(
        cli(
            data,
            "client",
            "add",
            "--name",
            "bench",
            "--grant-type",
            "client_credentials",
            "--scope",
            scope,
            "--json",
        )
    )
    return out["client_id"], out["client_secret"]


def _fresh_database(url: str) -> tuple[str, Callable[[], None]]:
    """A new PostgreSQL database beside the one ``url`` names, and how to drop it afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"cityid_bench_{secrets.token_hex(6)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(url).set(database=name).render_as_string(hide_password=False), drop


@contextmanager
def served(
    db_url: str | None = None, core: int = 0, workers: int = 1, threads: int = 1
) -> Iterator[tuple[Path, str]]:
    """A fresh instance, its server pinned to `core` (the load generator uses the others)."""
    tmp = Path(tempfile.mkdtemp(prefix="cityid-bench-"))
    data = tmp / "data"
    data.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    lines = [
        f'issuer = "{url}"',
        f'secret_key = "{secrets.token_urlsafe(32)}"',
        f'key_passphrase = "{secrets.token_urlsafe(32)}"',
    ]
    fresh_db = None
    if db_url:
        db_url, fresh_db = _fresh_database(db_url)  # never reuse another run's keys and rows
        lines.append(f'database_url = "{db_url}"')
    (data / "cityid.toml").write_text("\n".join(lines) + "\n")
    cli(data, "init")
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(core),
            *CLI,
            "serve",
            "--data-dir",
            str(data),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the workers go down with it
    )
    try:
        for _ in range(200):
            try:
                if requests.get(f"{url}/jwks.json", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        yield data, url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # no orphaned workers
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        if fresh_db is not None:
            fresh_db()
