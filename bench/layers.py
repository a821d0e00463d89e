"""Where the CPU time of one client-credentials token goes, layer by layer (JSON out).

With the token layers it prints ``paths``: CPU microseconds and SQL statements per refresh-token
grant, revocation and introspection, through the fast path and through Authlib alone
(``fast_paths = false``), on the same database (idp.oauth.fast_paths, idp.oauth.fast_refresh).

Everything runs in this process, pinned to one core, with no HTTP server: microseconds of CPU
per operation, the median of --rounds rounds. It shows what the token endpoint's work costs
on its own (one ES256 signature, one audited SQLite commit) against the layers it runs on
(werkzeug/Flask, Authlib, SQLAlchemy's Session), to tell where a faster /token would have to come
from. `bench/token.py` measures the served rate; this explains it.

Usage: .venv/bin/python bench/layers.py [--n 3000] [--rounds 3]
"""

from __future__ import annotations

import os
import sys

# bench/token.py shadows the stdlib `token` module: drop bench/ from the import path first.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
sys.path.insert(0, os.path.dirname(_here))

import argparse
import base64
import hashlib
import io
import json
import secrets
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._server import cli, machine_client


def per_op_us(
    fn: Callable[[], object], n: int, rounds: int, clock: Callable[[], float] = time.process_time
) -> float:
    for _ in range(min(n, 300)):
        fn()
    samples = []
    for _ in range(rounds):
        t = clock()
        for _ in range(n):
            fn()
        samples.append((clock() - t) / n * 1e6)
    return round(statistics.median(samples), 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--paths-only", action="store_true", help="only the fast-vs-Authlib table (paths)")
    a = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    tmp = Path(tempfile.mkdtemp(prefix="cityid-layers-"))
    try:
        print(json.dumps(measure(tmp, a.n, a.rounds, paths_only=a.paths_only)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(tmp: Path, n: int, rounds: int, *, paths_only: bool = False) -> dict[str, Any]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from flask import Flask, request
    from joserfc import jwt
    from joserfc.jwk import ECKey

    data = tmp / "data"
    data.mkdir()
    (data / "cityid.toml").write_text(
        'issuer = "http://127.0.0.1:8000"\n'
        f'secret_key = "{secrets.token_urlsafe(32)}"\nkey_passphrase = "{secrets.token_urlsafe(32)}"\n'
    )
    cli(data, "init")
    cid, secret = machine_client(data, "permits:read")
    if paths_only:
        return {"bench": "token_layers", "paths": fast_and_authlib(data, cid, secret, n, rounds)}
    from idp.app import create_app
    from idp.config import load_config
    from idp.oauth.server import _SELECT_CLIENT

    app = create_app(load_config(data))
    rt = app.extensions["cityid"]
    body = b"grant_type=client_credentials&scope=permits:read"
    basic = "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()

    def environ() -> dict[str, Any]:
        return {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/token",
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1:8000",
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": basic,
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
        }

    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    def cityid_token() -> None:
        b"".join(app(environ(), start_response))

    cityid_token()
    if not statuses[-1].startswith("200"):
        raise SystemExit(f"/token answered {statuses[-1]}")

    flask_app = Flask("minimal")

    @flask_app.post("/token")
    def _minimal() -> dict[str, Any]:
        return {"grant_type": request.form["grant_type"]}

    def flask_minimal() -> None:
        b"".join(flask_app(environ(), start_response))

    # The work itself: one ES256 signature, one audited commit (head row read, entry inserted,
    # head row moved) on SQLite in WAL mode, as cityid configures it.
    key = ec.generate_private_key(ec.SECP256R1())
    jose_key = ECKey.generate_key("P-256")
    claims = {"iss": "x", "sub": cid, "aud": [cid], "client_id": cid, "scope": "permits:read", "exp": 0}

    def es256_raw() -> None:
        key.sign(b"header.payload-of-about-three-hundred-bytes" * 7, ec.ECDSA(hashes.SHA256()))

    def jwt_joserfc() -> None:
        jwt.encode(
            {"alg": "ES256", "typ": "at+jwt", "kid": "k"},
            {**claims, "jti": secrets.token_urlsafe(16)},
            jose_key,
        )

    db = sqlite3.connect(tmp / "raw.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE audit (id TEXT PRIMARY KEY, body TEXT, hash TEXT)")
    db.execute("CREATE TABLE head (id INTEGER PRIMARY KEY, hash TEXT)")
    db.execute("INSERT INTO head VALUES (1, '')")

    def audited_commit_raw() -> None:
        db.execute("BEGIN IMMEDIATE")
        (prev,) = db.execute("SELECT hash FROM head WHERE id = 1").fetchone()
        entry = json.dumps({"action": "token.issue", "actor": cid, "at": time.time()})
        h = hashlib.sha256((prev + entry).encode()).hexdigest()
        db.execute("INSERT INTO audit VALUES (?, ?, ?)", (secrets.token_hex(16), entry, h))
        db.execute("UPDATE head SET hash = ? WHERE id = 1", (h,))
        db.execute("COMMIT")

    def session_cycle() -> None:
        s = rt.sessions()
        s.connection().execute(_SELECT_CLIENT, {"cid": cid}).first()
        s.commit()
        s.close()

    def core_cycle() -> None:
        with rt.engine.connect() as c:
            c.execute(_SELECT_CLIENT, {"cid": cid}).first()
            c.commit()

    def dbapi_cycle() -> None:
        conn = rt.engine.raw_connection()
        try:
            conn.driver_connection.execute("BEGIN IMMEDIATE")
            conn.driver_connection.execute("SELECT * FROM idp_client WHERE client_id = ?", (cid,)).fetchone()
            conn.commit()
        finally:
            conn.close()

    us = {
        name: per_op_us(fn, n, rounds)
        for name, fn in [
            ("cityid_token_endpoint", cityid_token),
            ("flask_minimal_form_view", flask_minimal),
            ("es256_sign_cryptography", es256_raw),
            ("jwt_encode_joserfc_es256", jwt_joserfc),
            ("audited_commit_sqlite3", audited_commit_raw),
            ("select_commit_sqlalchemy_session", session_cycle),
            ("select_commit_sqlalchemy_core", core_cycle),
            ("select_commit_pooled_dbapi", dbapi_cycle),
        ]
    }
    paths = fast_and_authlib(data, cid, secret, n, rounds)
    app.extensions["cityid"].courier.stop()
    essential = us["jwt_encode_joserfc_es256"] + us["audited_commit_sqlite3"]
    return {
        "bench": "token_layers",
        "cpu_us_per_operation": us,
        "token_work_itself_us": round(essential, 1),
        "everything_else_us": round(us["cityid_token_endpoint"] - essential, 1),
        "budget_us_for_2000_per_s_served": 500,
        "note": "in process, no HTTP server: the served request costs more (bench/token.py)",
        "paths": paths,
    }


def fast_and_authlib(data: Path, cid: str, secret: str, n: int, rounds: int) -> dict[str, Any]:
    """CPU µs and SQL statements per request, fast path vs Authlib alone, in this process:
    refresh-token grants (each request rotates the token the previous one returned), revocations
    of an access token (a fresh one each time, made beforehand) and introspections."""
    import dataclasses
    import datetime as dt

    from sqlalchemy import event, insert

    from db import transaction
    from idp.accounts import create_account
    from idp.app import create_app
    from idp.clients import ClientSpec, add_client
    from idp.config import load_config
    from idp.models import Grant, RefreshToken

    cfg = load_config(data)
    apps = {"fast": create_app(cfg), "authlib": create_app(dataclasses.replace(cfg, fast_paths=False))}
    rt = apps["fast"].extensions["cityid"]
    with transaction(rt.sessions) as s:
        row, rp_secret = add_client(
            s,
            rt.keys,
            ClientSpec(name="bench-rp", redirect_uris=["https://rp.example/cb"], scope="openid permits:read"),
        )
        rp_id = row.client_id
        account = create_account(
            s, rt.keys, "bench@example.org", secrets.token_urlsafe(16), verified=True, actor="admin"
        ).id
    rp_basic = "Basic " + base64.b64encode(f"{rp_id}:{rp_secret}".encode()).decode()
    cc_basic = "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()
    statements = {"n": 0}

    def count(*_: Any) -> None:
        statements["n"] += 1

    def call(app: Any, path: str, body: bytes, auth: str) -> dict[str, Any]:
        env = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1:8000",
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": auth,
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
        }
        status: list[str] = []
        out = b"".join(app(env, lambda st, h, e=None: status.append(st)))
        if not status[0].startswith("200"):
            raise SystemExit(f"{path} answered {status[0]}: {out[:200]!r}")
        return dict(json.loads(out))

    def new_refresh_token() -> str:
        token = secrets.token_urlsafe(32)
        with transaction(rt.sessions) as s:
            gid = secrets.token_urlsafe(16)
            s.execute(
                insert(Grant).values(
                    id=gid, client_id=rp_id, account_id=account, scope="openid permits:read", amr='["pwd"]'
                )
            )
            s.execute(
                insert(RefreshToken).values(
                    token_digest=rt.keys.token_digest(token),
                    grant_id=gid,
                    scope="openid permits:read",
                    expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
                )
            )
        return token

    def access_tokens(k: int) -> list[str]:
        body = b"grant_type=client_credentials&scope=permits:read"
        return [call(apps["fast"], "/token", body, cc_basic)["access_token"] for _ in range(k)]

    def measure(path: str, app: Any, ops: int) -> dict[str, float]:
        if path == "refresh":
            chain = [new_refresh_token()]

            def op() -> None:
                body = f"grant_type=refresh_token&refresh_token={chain[0]}".encode()
                chain[0] = call(app, "/token", body, rp_basic)["refresh_token"]
        else:
            pool = access_tokens(ops * rounds + min(ops, 300) + 1) if path == "revoke" else access_tokens(1)

            def op() -> None:
                token = pool.pop() if path == "revoke" else pool[0]
                call(
                    app,
                    f"/{'revoke' if path == 'revoke' else 'introspect'}",
                    f"token={token}".encode(),
                    cc_basic,
                )

        engine = app.extensions["cityid"].engine
        event.listen(engine, "before_cursor_execute", count)
        statements["n"] = 0
        op()
        per_request = statements["n"]
        event.remove(engine, "before_cursor_execute", count)
        # this thread's CPU: the apps' background threads (mail courier, purge) are not the request's
        return {"cpu_us": per_op_us(op, ops, rounds, time.thread_time), "sql_statements": per_request}

    ops = max(200, n // 3)
    out: dict[str, Any] = {}
    for path in ("refresh", "revoke", "introspect"):
        out[path] = {name: measure(path, app, ops) for name, app in apps.items()}
        out[path]["cpu_ratio_fast_to_authlib"] = round(
            out[path]["fast"]["cpu_us"] / out[path]["authlib"]["cpu_us"], 2
        )
    for app in apps.values():
        app.extensions["cityid"].courier.stop()
    out["how"] = (
        "time.thread_time of the requesting thread per request (median of rounds), in process, one"
        " core; SQL statements of one request (before_cursor_execute; BEGIN/COMMIT not counted)"
    )
    return out


if __name__ == "__main__":
    main()
