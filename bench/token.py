"""Client-credentials tokens/s with p50/p99 at concurrency 32, server pinned to one core.

Prints JSON. Uses wrk (Debian package `wrk`) on the other core as the load generator.
Usage: .venv/bin/python bench/token.py [--seconds 10] [--postgres URL]
"""

from __future__ import annotations

import os
import sys

# This file's name shadows the stdlib `token` module: drop bench/ from the import path first.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
sys.path.insert(0, os.path.dirname(_here))

import argparse
import base64
import json
import shutil

from bench._server import machine_client, served, wrk

LUA = """
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&scope=permits:read"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic %s"
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--postgres", help="PostgreSQL URL (default: SQLite in the data dir)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="request threads of the one worker")
    a = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench/token.py needs wrk: apt-get install wrk")
    with served(a.postgres, threads=a.threads) as (data, url):
        cid, secret = machine_client(data, "permits:read")
        basic = base64.b64encode(f"{cid}:{secret}".encode()).decode()
        r = wrk(f"{url}/token", LUA % basic, seconds=a.seconds, connections=a.concurrency)
    print(
        json.dumps(
            {
                "bench": "client_credentials_token",
                "database": "postgresql" if a.postgres else "sqlite",
                "server_cores": 1,
                "server_threads": a.threads,
                "concurrency": a.concurrency,
                "tokens_per_s": r["per_s"],
                "p50_ms": r["p50_ms"],
                "p99_ms": r["p99_ms"],
                "errors": r["errors"],
                "non2xx": r["non2xx"],
                "target": {"tokens_per_s": 2000, "p99_ms": 30},
            }
        )
    )


if __name__ == "__main__":
    main()
