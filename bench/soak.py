"""Soak: start and stop `cityid serve` many times under load, then hold a steady mixed load.

Counts signal deaths (a process or worker ended by a signal, the kernel's segfault lines in
dmesg, granian's "Unexpected exit from worker"), non-zero exits, failed requests, and samples RSS
and p99 over the steady phase. Prints one JSON document.

    python -m bench.soak --cycles 200 --minutes 30        # the issue's profile
    python -m bench.soak --cycles 20 --minutes 1          # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from bench._server import ROOT, cli, free_port, machine_client


def _dmesg_lines() -> list[str]:
    try:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.splitlines()


def _children_rss_kb(pid: int) -> int:
    """RSS of the server and its workers (kB), read from /proc."""
    total = 0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


class Load:
    """Client credentials, discovery and refused requests from a few threads."""

    def __init__(self, url: str, cid: str, secret: str, threads: int = 4) -> None:
        self.url, self.cid, self.secret = url, cid, secret
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.ok = self.failed = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        http = requests.Session()
        i = 0
        while not self.stop.is_set():
            i += 1
            t0 = time.perf_counter()
            try:
                if i % 5 == 0:
                    r = http.get(f"{self.url}/.well-known/openid-configuration", timeout=5)
                    good = r.status_code == 200
                elif i % 7 == 0:  # a refusal: audited, no state
                    r = http.post(
                        f"{self.url}/token",
                        data={"grant_type": "client_credentials"},
                        auth=(self.cid, "wrong"),
                        timeout=5,
                    )
                    good = r.status_code == 401
                else:
                    r = http.post(
                        f"{self.url}/token",
                        data={"grant_type": "client_credentials"},
                        auth=(self.cid, self.secret),
                        timeout=5,
                    )
                    good = r.status_code == 200
            except requests.RequestException:
                good = False
            dt = time.perf_counter() - t0
            with self.lock:
                self.latencies.append(dt)
                if good:
                    self.ok += 1
                else:
                    self.failed += 1

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def end(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def take(self) -> tuple[int, int, float]:
        with self.lock:
            lat, ok, failed = sorted(self.latencies), self.ok, self.failed
            self.latencies, self.ok, self.failed = [], 0, 0
        p99 = lat[int(len(lat) * 0.99) - 1] * 1000 if lat else 0.0
        return ok, failed, round(p99, 2)


def _serve(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "serve",
            "--data-dir",
            str(data),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "2",
            "--drain-seconds",  # the cycles are about the stop itself, not the load balancer's drain
            "0",
        ],
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_up(url: str) -> bool:
    for _ in range(400):
        try:
            if requests.get(f"{url}/jwks.json", timeout=1).ok:
                return True
        except requests.RequestException:
            time.sleep(0.05)
    return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--database-url", default="")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cityid-soak-"))
    data = tmp / "data"
    data.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    lines = [
        f'issuer = "{url}"',
        f'secret_key = "{secrets.token_urlsafe(32)}"',
        f'key_passphrase = "{secrets.token_urlsafe(32)}"',
    ]
    if args.database_url:
        lines.append(f'database_url = "{args.database_url}"')
    (data / "cityid.toml").write_text("\n".join(lines) + "\n")
    cli(data, "init")
    cid, secret = machine_client(data, "read")
    log = tmp / "serve.log"
    dmesg_before = len(_dmesg_lines())
    exits: dict[str, int] = {}
    cycle_ok = cycle_failed = 0
    t_cycles = time.monotonic()
    for _ in range(args.cycles):
        proc = _serve(data, port, log)
        if not _wait_up(url):
            exits["never_up"] = exits.get("never_up", 0) + 1
        load = Load(url, cid, secret, threads=2).start()
        time.sleep(0.5)
        load.stop.set()  # no new requests; those in flight meet the SIGTERM
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
        load.end()
        ok, failed, _ = load.take()
        cycle_ok += ok
        cycle_failed += failed  # in flight when the SIGTERM came: a graceful stop answers them
        exits[str(rc)] = exits.get(str(rc), 0) + 1
    cycles_s = time.monotonic() - t_cycles

    samples: list[dict[str, Any]] = []
    steady_failed = 0
    if args.minutes > 0:
        proc = _serve(data, port, log)
        _wait_up(url)
        load = Load(url, cid, secret, threads=4).start()
        end = time.monotonic() + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(30.0, max(1.0, args.minutes * 60 / 20)))
            ok, failed, p99 = load.take()
            steady_failed += failed
            samples.append(
                {
                    "t_s": round(args.minutes * 60 - (end - time.monotonic())),
                    "requests": ok + failed,
                    "failed": failed,
                    "p99_ms": p99,
                    "rss_kb": _children_rss_kb(proc.pid),
                }
            )
        load.end()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        exits[str(rc)] = exits.get(str(rc), 0) + 1

    new_kernel = _dmesg_lines()[dmesg_before:]
    segfaults = [ln for ln in new_kernel if re.search(r"segfault|general protection|traps:", ln)]
    server_log = log.read_text(errors="replace")
    unexpected = server_log.count("Unexpected exit from worker")
    signal_deaths = sum(n for code, n in exits.items() if code.lstrip("-").isdigit() and int(code) < 0)
    print(
        json.dumps(
            {
                "cycles": args.cycles,
                "cycles_seconds": round(cycles_s, 1),
                "exit_codes": exits,
                "signal_deaths": signal_deaths + len(segfaults) + unexpected,
                "kernel_segfault_lines": segfaults[:10],
                "unexpected_worker_exits": unexpected,
                "requests_during_cycles": {"ok": cycle_ok, "failed": cycle_failed},
                "steady_minutes": args.minutes,
                "steady_failed_requests": steady_failed,
                "steady_samples": samples,
            },
            indent=2,
        )
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
