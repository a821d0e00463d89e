"""A real `cityid serve` process for the tests that need one: started in its own process group
with its output in a log file, and stopped with SIGTERM (then SIGKILL for whatever is left)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def up(url: str, timeout: float = 60) -> bool:
    """Whether the server at ``url`` answers its JWKS within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/jwks.json", timeout=1).ok:
                return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def serving(
    data: Path, port: int, log: Path, *, workers: int | None = 1, extra: tuple[str, ...] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """`cityid serve` on 127.0.0.1:``port`` (``workers=None``: the server's default; ``extra``:
    more options); on leaving, SIGTERM if it still runs and 30 s to stop, then SIGKILL to its
    process group."""
    args = [sys.executable, "-m", "cli", "serve", "--data-dir", str(data), "--bind", f"127.0.0.1:{port}"]
    if workers is not None:
        args += ["--workers", str(workers)]
    args += extra
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def tail(log: Path) -> str:
    """The end of a server's log, for an assertion's message."""
    return log.read_text()[-2000:]
