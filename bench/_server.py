"""Shared bench helpers: a fresh instance served by `cityid serve`, pinned to one core."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(data: Path, *args: str, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "cli", *args, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return res.stdout


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
    if db_url:
        lines.append(f'database_url = "{db_url}"')
    (data / "cityid.toml").write_text("\n".join(lines) + "\n")
    cli(data, "init")
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(core),
            sys.executable,
            "-m",
            "cli",
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
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
