"""schemathesis (its CLI, as an outside tester runs it) against a live `cityid serve` (granian).

The real server parses the HTTP: what the in-process tests cannot see (framing, header
parsing, the production WSGI server) is exercised here. ``make test``: a few examples per
operation, fixed seed. ``make fuzz``: its share of the long profile's time (``--max-time``).
Every check but ``positive_data_acceptance`` (a schema-valid DPoP proof or client secret is
still a wrong one: a 4xx is right).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.fuzz.conftest import LONG, STATS, STATUSES, TOTAL_SECONDS
from tests.idp.conftest import free_port

LIVE_SHARE = 0.18  # of the long profile's time (the in-process campaign has the rest)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CITYID = [sys.executable, "-m", "cli"]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`cityid init` and `cityid serve` on a fresh data dir; the server's base URL."""
    tmp = tmp_path_factory.mktemp("live")
    data = tmp / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    subprocess.run(
        [*CITYID, "init", "--data-dir", str(data), "--issuer", base],
        check=True,
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )
    proc = subprocess.Popen(
        [*CITYID, "serve", "--data-dir", str(data), "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "serve.log").open("w"),
        cwd=ROOT,
        start_new_session=True,  # its own process group: the workers go down with it
    )
    try:
        for _ in range(300):
            try:
                if requests.get(f"{base}/openapi.json", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError(f"cityid serve did not start: {(tmp / 'serve.log').read_text()[-2000:]}")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_schemathesis_against_cityid_serve_finds_no_failure(live: str, tmp_path: Path) -> None:
    har = tmp_path / "schemathesis.har"
    budget = (
        ["--max-time", str(max(30, int(TOTAL_SECONDS * LIVE_SHARE))), "--generation-database", "none"]
        if LONG
        else ["--max-examples", "2", "--seed", "1", "--generation-deterministic"]
    )
    run = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            f"{live}/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--workers",
            "2" if LONG else "1",
            "--report-har-path",
            str(har),
            *budget,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=TOTAL_SECONDS + 300 if LONG else 240,
        env={**os.environ, "NO_COLOR": "1"},
    )
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    for entry in entries:
        path = entry["request"]["url"].removeprefix(live).split("?")[0]
        label = f"live schemathesis {path if len(path) < 40 else path[:37] + '...'} (any method)"
        status = int(entry["response"]["status"])
        STATS[label][0] += 1
        STATUSES[label][status] += 1
        if status >= 500:
            STATS[label][1] += 1
    assert entries, run.stdout[-3000:] + run.stderr[-2000:]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
