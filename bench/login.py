"""Full authorization-code + PKCE logins/s against one pinned core; password hash cost apart.

Each login: GET /authorize -> GET /login -> POST /login (argon2id) -> GET /authorize (code)
-> POST /token. Prints JSON with logins/s, p50/p99 and the argon2id verify time measured in
the same interpreter, and the rate with the hash subtracted (server on one core).
Usage: .venv/bin/python bench/login.py [--logins 200] [--concurrency 8]
"""

from __future__ import annotations

import os
import sys

# bench/token.py shadows the stdlib `token` module: keep bench/ off the import path.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
sys.path.insert(0, os.path.dirname(_here))

import argparse
import base64
import hashlib
import json
import re
import secrets
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import requests

from bench._server import cli, served

PASSWORD = "correct horse battery staple"
REDIRECT = "http://127.0.0.1:9/cb"


def one_login(url: str, cid: str, secret: str, email: str) -> float:
    t0 = time.perf_counter()
    http = requests.Session()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    params = {
        "response_type": "code",
        "client_id": cid,
        "redirect_uri": REDIRECT,
        "scope": "openid email",
        "state": "s",
        "code_challenge": challenge.decode(),
        "code_challenge_method": "S256",
    }
    r = http.get(f"{url}/authorize", params=params, allow_redirects=False)
    page = http.get(url + r.headers["Location"])
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = http.post(
        f"{url}/login",
        data={"csrf_token": token, "email": email, "password": PASSWORD},
        allow_redirects=False,
    )
    if not r.headers["Location"].startswith(REDIRECT):  # the login POST answers with the code
        r = http.get(url + r.headers["Location"], allow_redirects=False)  # when nothing is missing
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    r = http.post(
        f"{url}/token",
        auth=(cid, secret),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
    )
    assert r.status_code == 200, r.text
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--logins", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    a = ap.parse_args()
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:  # type: ignore[operator]
        os.sched_setaffinity(0, {1})  # the server has core 0
    from idp.crypto import hash_password, verify_password

    h = hash_password(PASSWORD)
    t = time.perf_counter()
    for _ in range(20):
        verify_password(h, PASSWORD)
    hash_ms = (time.perf_counter() - t) / 20 * 1000
    with served() as (data, url):
        c = json.loads(cli(data, "client", "add", "--name", "bench", "--redirect-uri", REDIRECT, "--json"))
        users = []
        for i in range(a.concurrency):
            email = f"citizen{i}@bench.example"
            cli(
                data,
                "user",
                "add",
                "--email",
                email,
                "--verified",
                env={"CITYID_NEW_USER_PASSWORD": PASSWORD},
            )
            users.append(email)
        # consent once per user, so the measured logins are the steady state
        for email in users:
            _consent(url, c["client_id"], email)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(a.concurrency) as pool:
            durations = list(
                pool.map(
                    lambda i: one_login(url, c["client_id"], c["client_secret"], users[i % len(users)]),
                    range(a.logins),
                )
            )
        elapsed = time.perf_counter() - t0
    durations.sort()
    server_busy_without_hash = elapsed - a.logins * hash_ms / 1000
    print(
        json.dumps(
            {
                "bench": "code_pkce_login",
                "database": "sqlite",
                "server_cores": 1,
                "concurrency": a.concurrency,
                "logins": a.logins,
                "logins_per_s": round(a.logins / elapsed, 1),
                "p50_ms": round(durations[len(durations) // 2] * 1000, 1),
                "p99_ms": round(durations[int(len(durations) * 0.99) - 1] * 1000, 1),
                "argon2id_verify_ms": round(hash_ms, 1),
                "logins_per_s_excluding_hash": round(a.logins / max(server_busy_without_hash, 1e-9), 1),
                "mean_ms": round(statistics.mean(durations) * 1000, 1),
                "target": {"logins_per_s_excluding_hash": 300, "p99_ms": 30},
            }
        )
    )


def _consent(url: str, cid: str, email: str) -> None:
    http = requests.Session()
    params = {
        "response_type": "code",
        "client_id": cid,
        "redirect_uri": REDIRECT,
        "scope": "openid email",
        "state": "s",
        "code_challenge": "A" * 43,
        "code_challenge_method": "S256",
    }
    r = http.get(f"{url}/authorize", params=params, allow_redirects=False)
    page = http.get(url + r.headers["Location"])
    tok = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = http.post(
        f"{url}/login", data={"csrf_token": tok, "email": email, "password": PASSWORD}, allow_redirects=False
    )
    consent = http.get(url + r.headers["Location"])
    tok = re.search(r'name="csrf_token" value="([^"]+)"', consent.text).group(1)  # type: ignore[union-attr]
    http.post(
        url + r.headers["Location"], data={"csrf_token": tok, "decision": "allow"}, allow_redirects=False
    )


if __name__ == "__main__":
    main()
