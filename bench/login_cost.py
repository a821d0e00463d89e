"""What one full login costs the server, in process: SQL statements, round trips and CPU, with the
argon2id share.

One login as a relying party sees it (consent already given, as in the steady state): GET
/authorize -> GET /login -> POST /login (argon2id) -> GET /authorize (code) -> POST /token (code +
PKCE). The app runs in this process behind werkzeug's test client (no network, no server), so the
CPU is the provider's own (plus the test client's small share); statements are counted with a
SQLAlchemy ``before_cursor_execute`` listener installed here, in the bench only.

``code_exchange``: the /token step alone (code + PKCE, ID token, refresh token), CPU per exchange
and SQL statements, with the fast path (idp.oauth.fast_code) against Authlib alone on the same
database (codes written as /authorize stores them).

Prints JSON. Usage: python -m bench.login_cost [--logins 30] [--exchanges 300] [--postgres URL]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from sqlalchemy import event
from werkzeug.test import Client

PASSWORD = "correct horse battery staple"
REDIRECT = "http://127.0.0.1:9/cb"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _setup(db_url: str | None) -> tuple[Any, str, str, str]:
    from bench._server import _fresh_database
    from db import make_engine, make_session_factory, transaction
    from idp.accounts import create_account
    from idp.app import create_app
    from idp.clients import ClientSpec, add_client
    from idp.config import Config
    from idp.instance import InstanceKeys
    from idp.keys import ensure_keys

    tmp = Path(tempfile.mkdtemp(prefix="cityid-login-cost-"))
    if db_url:
        import atexit

        db_url, drop = _fresh_database(db_url)
        atexit.register(drop)
    else:
        db_url = f"sqlite:///{tmp}/cityid.sqlite3"
    cfg = Config(
        data_dir=tmp,
        database_url=db_url,
        issuer="http://127.0.0.1:9999",
        secret_key=secrets.token_urlsafe(32),
        key_passphrase=secrets.token_urlsafe(32),
    )
    from db.migrate import upgrade

    engine = make_engine(cfg.db_url)
    upgrade(engine)
    keys = InstanceKeys.from_config(cfg)
    with transaction(make_session_factory(engine)) as s:
        ensure_keys(s, cfg.key_passphrase)
        row, secret = add_client(s, keys, ClientSpec(name="bench", redirect_uris=[REDIRECT]))
        create_account(s, keys, "citizen@bench.example", PASSWORD, verified=True, actor="admin")
    engine.dispose()
    app = create_app(cfg)
    return app, row.client_id, str(secret), "citizen@bench.example"


def one_login(app: Any, cid: str, secret: str, email: str, consent: bool = False) -> int:
    """One login; returns the number of HTTP requests it took."""
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
    requests = 1
    r = c.get("/authorize?" + urlencode(params))
    for _ in range(10):
        loc = r.headers.get("Location", "")
        if r.status_code in (302, 303) and loc.startswith(REDIRECT):
            break
        if r.status_code in (302, 303):
            r = c.get(loc)
        else:
            page = r.get_data(as_text=True)
            token = CSRF.search(page).group(1)  # type: ignore[union-attr]
            path = r.request.path + ("?" + r.request.query_string.decode() if r.request.query_string else "")
            if 'name="password"' in page:
                r = c.post(path, data={"csrf_token": token, "email": email, "password": PASSWORD})
            elif consent:
                r = c.post(path, data={"csrf_token": token, "decision": "allow"})
            else:
                raise RuntimeError(f"unexpected page at {path}")
        requests += 1
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    auth = "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()
    r = c.post(
        "/token",
        headers={"Authorization": auth},
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
    )
    assert r.status_code == 200, r.get_data()
    return requests + 1


def _codes(app: Any, cid: str, n: int) -> list[tuple[str, str]]:
    """``n`` codes (and their PKCE verifiers) as /authorize stores them, for the citizen's grant
    with the client (written directly: the exchange alone is measured, not the login)."""
    import datetime as dt

    from sqlalchemy import select

    from db import new_id, transaction
    from idp.models import Account, AuthorizationCode, Grant

    rt = app.extensions["cityid"]
    now = dt.datetime.now(dt.UTC)
    out = []
    with transaction(rt.sessions) as s:
        account = s.execute(select(Account.id)).scalar_one()
        for _ in range(n):
            code, verifier, gid = secrets.token_urlsafe(32), secrets.token_urlsafe(48), new_id()
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
            s.add(
                Grant(
                    id=gid,
                    client_id=cid,
                    account_id=account,
                    sid=new_id(),
                    scope="openid email",
                    auth_time=int(time.time()),
                    acr="http://eidas.europa.eu/LoA/low",
                    amr='["pwd"]',
                )
            )
            s.flush()
            s.add(
                AuthorizationCode(
                    code_digest=rt.keys.token_digest(code),
                    grant_id=gid,
                    client_id=cid,
                    redirect_uri=REDIRECT,
                    scope="openid email",
                    nonce="n",
                    code_challenge=challenge.decode(),
                    code_challenge_method="S256",
                    expires_at=now + dt.timedelta(minutes=30),
                )
            )
            out.append((code, verifier))
    return out


def code_exchange_cost(app: Any, cid: str, secret: str, n: int, statements: list[str]) -> dict[str, Any]:
    """CPU (process time, this process: the provider and the test client) and SQL statements of
    one code exchange at /token (code + PKCE S256, ID token, refresh token), with the fast path
    (idp.oauth.fast_code) and with Authlib alone (``fast_paths = false``), on the same database."""
    import dataclasses

    from idp.app import create_app

    rt = app.extensions["cityid"]
    oracle = create_app(dataclasses.replace(rt.config, fast_paths=False))
    event.listen(oracle.extensions["cityid"].engine, "before_cursor_execute", _counter(statements))
    auth = "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()
    out: dict[str, Any] = {}
    for name, target in (("fast_path", app), ("authlib", oracle)):
        c = Client(target)
        codes = _codes(app, cid, n + 20)

        def exchange(code: str, verifier: str, c: Any = c) -> None:
            data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
            r = c.post("/token", headers={"Authorization": auth}, data=data | {"code_verifier": verifier})
            assert r.status_code == 200, r.get_data()

        for code, verifier in codes[:20]:  # warm
            exchange(code, verifier)
        statements.clear()
        t = time.process_time()
        for code, verifier in codes[20:]:
            exchange(code, verifier)
        cpu = (time.process_time() - t) / n
        kinds: dict[str, int] = {}
        for st in statements:
            kinds[st] = kinds.get(st, 0) + 1
        out[name] = {
            "cpu_us_per_exchange": round(cpu * 1e6, 1),
            "sql_statements_per_exchange": round(len(statements) / n, 1),
            "sql_statements_by_kind": {k: round(v / n, 1) for k, v in sorted(kinds.items())},
        }
    out["exchanges"] = n
    out["fast_path_cpu_share_of_authlib"] = round(
        out["fast_path"]["cpu_us_per_exchange"] / out["authlib"]["cpu_us_per_exchange"], 2
    )
    return out


def _counter(statements: list[str]) -> Any:
    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    return count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--logins", type=int, default=30)
    ap.add_argument("--exchanges", type=int, default=300, help="code exchanges per path")
    ap.add_argument("--postgres", help="PostgreSQL URL (default: SQLite)")
    a = ap.parse_args()
    from idp.crypto import hash_password, verify_password

    app, cid, secret, email = _setup(a.postgres)
    one_login(app, cid, secret, email, consent=True)  # the consent, once
    engine = app.extensions["cityid"].engine
    statements: list[str] = []

    event.listen(engine, "before_cursor_execute", _counter(statements))

    one_login(app, cid, secret, email)  # warm
    h = hash_password(PASSWORD)
    hash_cpu = []
    for _ in range(10):
        t = time.process_time()
        verify_password(h, PASSWORD)
        hash_cpu.append(time.process_time() - t)
    statements.clear()
    cpu, trips = [], 0
    for _ in range(a.logins):
        t = time.process_time()
        trips = one_login(app, cid, secret, email)
        cpu.append(time.process_time() - t)
    per_login = len(statements) / a.logins
    kinds: dict[str, int] = {}
    for s in statements:
        kinds[s] = kinds.get(s, 0) + 1
    login_ms = statistics.median(cpu) * 1000
    exchange = code_exchange_cost(app, cid, secret, a.exchanges, statements)
    hash_ms = statistics.median(hash_cpu) * 1000
    print(
        json.dumps(
            {
                "bench": "login_cost",
                "database": "postgresql" if a.postgres else "sqlite",
                "logins": a.logins,
                "http_requests_per_login": trips,
                "sql_statements_per_login": round(per_login, 1),
                "sql_statements_by_kind": {k: round(v / a.logins, 1) for k, v in sorted(kinds.items())},
                "cpu_ms_per_login": round(login_ms, 2),
                "argon2id_verify_cpu_ms": round(hash_ms, 2),
                "cpu_ms_outside_hash": round(login_ms - hash_ms, 2),
                "argon2id_share_pct": round(100 * hash_ms / login_ms, 1),
                "code_exchange": exchange,
                "target": {
                    "sql_statements_per_login": 12,
                    "argon2id_share_pct": 85,
                    "cpu_ms_outside_hash": 2,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
