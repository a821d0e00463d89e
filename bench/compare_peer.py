"""Side by side in one run: panva's oidc-provider (the OpenID Certified Node peer) and cityid
(SQLite and PostgreSQL), each server pinned to CPU 0, the load generator on CPU 1.

Uses the peer harness (a copy of ../shared/bench-peer set up as its README says: `apt-get install
-y wrk`, `npm ci` in peer/, its .venv) for the peer's numbers and for the common scenarios
(client_credentials, discovery, JWKS, full code+PKCE login); adds cityid-only scenarios measured
with the same wrk settings (refresh-token grants, userinfo, introspection).

    python -m bench.compare_peer [--peer /tmp/bench-peer] [--db sqlite,postgresql]
                                 [--duration 10] [--runs 3] [--json]
                                 [--threads 1] [--pg-threads 1]

Prints a markdown table with the ratio cityid / peer of the same run (or JSON lines with --json).
The machine may be shared: every number is the median of --runs runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench._server import cli, served

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
COMMON = "client_credentials,discovery,jwks,login"


def load(
    peer: Path, issuer: str, cid: str, secret: str, pid: int, label: str, a: Any, extra: list[str]
) -> list[dict[str, Any]]:
    cmd = [
        str(peer / ".venv/bin/python"),
        str(peer / "load.py"),
        "--issuer",
        issuer,
        f"--client-id={cid}",
        f"--client-secret={secret}",  # one argument even when the random secret starts with "-"
        "--label",
        label,
        "--cpu",
        "1",
        "--server-pid",
        str(pid),
        "--duration",
        str(a.duration),
        "--runs",
        str(a.runs),
        "--warmup",
        str(a.warmup),
        "--scenarios",
        a.scenarios,
        *extra,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"load.py failed for {label}: {out.stderr[-800:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def wait_ready(url: str) -> None:
    for _ in range(150):
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url + "/.well-known/openid-configuration", timeout=1):
                return
        time.sleep(0.2)
    sys.exit(f"{url} did not come up")


def run_peer(peer: Path, a: Any) -> list[dict[str, Any]]:
    port = 4010
    proc = subprocess.Popen(
        ["taskset", "-c", "0", "node", "peer/server.mjs"],
        cwd=peer,
        start_new_session=True,
        env={**os.environ, "NODE_ENV": "production", "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        return load(peer, f"http://127.0.0.1:{port}", "bench", "bench-secret", proc.pid, "peer", a, [])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def server_pid(url: str) -> int:
    """The `cityid serve` process group leader listening on url's port (for its CPU)."""
    port = url.rsplit(":", 1)[1]
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    pids = [int(p.split("=")[1]) for p in out.replace(",", " ").split() if p.startswith("pid=")]
    return os.getpgid(pids[0]) if pids else 0


def run_cityid(peer: Path, db: str, a: Any) -> list[dict[str, Any]]:
    from bench.extra import extra_scenarios

    pg = os.environ.get("CITYID_BENCH_POSTGRES_URL", PG_DEFAULT) if db == "postgresql" else None
    # one worker pinned to one core; request threads let PostgreSQL's commit flushes overlap (a
    # durable commit waits for the disk: with one thread, one flush at a time bounds the rate)
    threads = a.pg_threads if pg else a.threads
    with served(pg, threads=threads) as (data, url):
        password = secrets.token_urlsafe(18)
        cli(data, "user", "add", "--email", "alice@example.org", f"--password={password}", "--verified")
        out = json.loads(
            cli(
                data,
                "client",
                "add",
                "--name",
                "bench",
                "--client-id",
                "bench",
                "--redirect-uri",
                "http://127.0.0.1:9999/cb",
                "--grant-type",
                "authorization_code",
                "--grant-type",
                "refresh_token",
                "--grant-type",
                "client_credentials",
                "--scope",
                "openid profile email offline_access",
                "--json",
            )
        )
        pid = server_pid(url)
        label = f"cityid-{db}"
        rows = load(
            peer,
            url,
            "bench",
            out["client_secret"],
            pid,
            label,
            a,
            ["--username", "alice@example.org", f"--password={password}", "--login-prompt", "consent"],
        )
        if not a.no_extra:
            rows += extra_scenarios(
                url,
                "bench",
                out["client_secret"],
                "alice@example.org",
                password,
                pid,
                label,
                a.duration,
                a.runs,
            )
        return rows


def table(peer_rows: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    peer_by = {r["scenario"]: r for r in peer_rows}
    cc = peer_by.get("client_credentials", {}).get("rps")
    lines = [
        "| scenario | peer rate | peer p99 ms | cityid rate | cityid p99 ms | ratio cityid/peer | runs (cityid) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = peer_by.get(r["scenario"])
        base, note = (p["rps"], "") if p else (cc, " (vs peer client_credentials)")
        ratio = f"{r['rps'] / base:.2f}×{note}" if base else "–"
        runs = ", ".join(f"{x['rps']:.0f}" for x in r.get("per_run", []))
        prate = f"{p['rps']:.0f}" if p else "–"
        pp99 = f"{p['p99_ms']:.1f}" if p else "–"
        lines.append(
            f"| {r['scenario']} | {prate} | {pp99} | "
            f"{r['rps']:.0f} {r['unit']} | {r['p99_ms']:.1f} | {ratio} | {runs} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", type=Path, default=Path(os.environ.get("BENCH_PEER", "/tmp/bench-peer")))
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--scenarios", default=COMMON)
    ap.add_argument("--no-extra", action="store_true", help="skip refresh/userinfo/introspection")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="request threads of cityid's one worker (SQLite)")
    ap.add_argument(
        "--pg-threads", type=int, default=1, help="request threads of the one worker on PostgreSQL"
    )
    a = ap.parse_args()
    if not (a.peer / "peer/node_modules").is_dir() or not (a.peer / ".venv/bin/python").exists():
        sys.exit(f"set up the peer harness in {a.peer} first (see its README)")
    if not shutil.which("wrk"):
        sys.exit("needs wrk: apt-get install -y wrk")
    peer_rows = run_peer(a.peer, a)
    results = {db: run_cityid(a.peer, db, a) for db in a.db.split(",") if db}
    if a.json:
        for r in peer_rows:
            print(json.dumps(r))
        for rows in results.values():
            for r in rows:
                print(json.dumps(r))
        return
    for db, rows in results.items():
        threads = a.pg_threads if db == "postgresql" else a.threads
        print(
            f"\n### cityid on {db} (1 worker, {threads} thread(s), one core) vs oidc-provider "
            f"(medians of {a.runs} runs of {a.duration:.0f} s)\n"
        )
        print(table(peer_rows, rows))


if __name__ == "__main__":
    main()
