"""What one token costs the database layer, in process, on SQLite and on PostgreSQL: SQL statements
(BEGIN and COMMIT included), CPU of this process and CPU of the PostgreSQL backend, per
client-credentials token and per refresh.

The app runs in this process (its WSGI callable, no HTTP server), one request at a time, so the
CPU is the provider's own and the PostgreSQL backend's (``/proc/<pid>/stat`` of the backends of the
bench's database; the server must run on this machine). Statements are counted by the database:
PostgreSQL's ``pg_stat_statements`` when the server has it loaded (utility statements tracked), else
left out; SQLite's trace callback (installed here, in the bench only).

Prints JSON. Usage: python -m bench.db_cost [--n 2000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from sqlalchemy import event, text

from bench.login_cost import CSRF, PASSWORD, REDIRECT, _setup

_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` (from /proc; a process gone counts 0)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def environ(body: bytes, auth: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/token",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "9999",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:9999",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": auth,
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
    }


def basic(cid: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()


def post_token(app: Any, body: dict[str, str], auth: str) -> dict[str, Any]:
    answer: dict[str, str] = {}

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        answer["status"] = status

    raw = b"".join(app(environ(urlencode(body).encode(), auth), start_response))
    if not answer["status"].startswith("200"):
        raise RuntimeError(f"/token answered {answer['status']}: {raw[:300]!r}")
    return dict(json.loads(raw))


def first_refresh_token(app: Any, cid: str, secret: str, email: str) -> str:
    """A refresh token from one full code + PKCE login (consent given on the way)."""
    from werkzeug.test import Client

    c = Client(app)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "response_type": "code",
        "client_id": cid,
        "redirect_uri": REDIRECT,
        "scope": "openid email",
        "state": "s",
        "nonce": "n",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    r = c.get("/authorize?" + urlencode(params))
    for _ in range(10):
        loc = r.headers.get("Location", "")
        if r.status_code in (302, 303) and loc.startswith(REDIRECT):
            break
        if r.status_code in (302, 303):
            r = c.get(loc)
            continue
        page = r.get_data(as_text=True)
        m = CSRF.search(page)
        assert m, page[:300]
        path = r.request.path + ("?" + r.request.query_string.decode() if r.request.query_string else "")
        if 'name="password"' in page:
            r = c.post(path, data={"csrf_token": m.group(1), "email": email, "password": PASSWORD})
        else:
            r = c.post(path, data={"csrf_token": m.group(1), "decision": "allow"})
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    body = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    return str(post_token(app, body, basic(cid, secret))["refresh_token"])


class Statements:
    """Statements the database ran, by their first word, between two reads."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.pg = engine.dialect.name == "postgresql"
        self.sqlite: list[str] = []
        self.available = True
        if self.pg:
            with engine.connect() as conn:
                try:
                    conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
                    conn.commit()
                    conn.execute(text("SELECT 1 FROM pg_stat_statements LIMIT 1")).all()
                except Exception:  # not in shared_preload_libraries
                    self.available = False
        else:

            @event.listens_for(engine, "connect")
            def _trace(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.set_trace_callback(self.sqlite.append)

            engine.dispose()  # pooled connections get the callback when they connect again

    def reset(self) -> None:
        self.sqlite.clear()
        if self.pg and self.available:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_stat_statements_reset()"))
                conn.commit()

    def read(self) -> dict[str, int]:
        kinds: dict[str, int] = {}
        if self.pg:
            if not self.available:
                return {}
            with self.engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT query, calls FROM pg_stat_statements WHERE dbid = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())"
                    )
                ).all()
            for q, calls in rows:
                if "pg_stat_statements" in q:
                    continue
                kind = q.split(None, 1)[0].upper()
                kinds[kind] = kinds.get(kind, 0) + calls
        else:
            for q in self.sqlite:
                kind = q.split(None, 1)[0].upper()
                kinds[kind] = kinds.get(kind, 0) + 1
        return kinds


def backends(engine: Any) -> list[int]:
    """The backends of the bench's database: asked on a connection of its own, outside the app's
    pool (whose idle connection is the one the app uses)."""
    if engine.dialect.name != "postgresql":
        return []
    import psycopg

    dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [
            int(r[0])
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
        ]


def cost(fn: Callable[[], object], n: int, engine: Any, statements: Statements) -> dict[str, Any]:
    for _ in range(50):
        fn()
    statements.reset()
    pids = backends(engine)
    pg0 = proc_cpu(pids)
    t0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    pg = proc_cpu(pids) - pg0
    kinds = statements.read()
    out: dict[str, Any] = {
        "n": n,
        "process_cpu_us_per_op": round(cpu / n * 1e6),
        "wall_us_per_op": round(wall / n * 1e6),
    }
    if engine.dialect.name == "postgresql":
        out["postgres_backend_cpu_us_per_op"] = round(pg / n * 1e6)
        out["total_cpu_us_per_op"] = round((cpu + pg) / n * 1e6)
    if kinds:
        out["statements_per_op"] = round(sum(kinds.values()) / n, 2)
        out["statements_by_kind"] = {k: round(v / n, 2) for k, v in sorted(kinds.items())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--postgres", help="PostgreSQL URL on this machine (default: SQLite)")
    a = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from db import make_session_factory, transaction
    from idp.clients import ClientSpec, add_client

    app, cid, secret, email = _setup(a.postgres)
    rt = app.extensions["cityid"]
    engine = rt.engine
    with transaction(make_session_factory(engine)) as s:
        machine, msecret = add_client(
            s, rt.keys, ClientSpec(name="machine", grant_types=["client_credentials"], scope="permits:read")
        )
    m_auth = basic(machine.client_id, str(msecret))
    cc_body = {"grant_type": "client_credentials", "scope": "permits:read"}
    auth = basic(cid, secret)
    refresh = [first_refresh_token(app, cid, secret, email)]

    def client_credentials() -> None:
        post_token(app, cc_body, m_auth)

    def refresh_grant() -> None:
        answer = post_token(app, {"grant_type": "refresh_token", "refresh_token": refresh[0]}, auth)
        refresh[0] = answer["refresh_token"]

    statements = Statements(engine)
    result = {
        "bench": "db_cost",
        "database": engine.dialect.name,
        "client_credentials": cost(client_credentials, a.n, engine, statements),
        "refresh": cost(refresh_grant, max(a.n // 2, 100), engine, statements),
        "note": "in process, one request at a time, no HTTP server; CPU time, not rates",
    }
    rt.courier.stop()
    engine.dispose()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
