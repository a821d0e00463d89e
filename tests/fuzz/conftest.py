"""The fuzz campaign's target and its three checks (issue 18).

One cityid instance (SQLite in a temporary data dir, initialised like ``cityid init``: signing
keys, CA; a confidential and a public client; a citizen logged in with a session and its CSRF
token), driven in-process through Flask's test client, which runs the full WSGI stack (the
`/token` and OCSP middlewares included) without sockets: a request costs about a millisecond.

Every response is checked:

1. no 5xx;
2. a JSON error (status >= 400) is an object with string ``error`` and ``error_description``;
3. a refused request (status >= 400) changes no state: a digest of every table is the same
   before and after, except the tables that record *attempts* on purpose (the audit log, the
   replay caches of used ``jti``/proofs/assertions, the login throttle's counters) and the OCSP
   answer cache.

Profiles (``CITYID_FUZZ_PROFILE``): ``ci`` (default; part of ``make test``, a fixed number of
examples per test, derandomized so every run sends the same requests) and ``long`` (``make
fuzz``: random, each test runs for its share of ``CITYID_FUZZ_SECONDS``, default 1200, and the
report lists the requests sent per endpoint and the server errors).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine

PROFILE = os.environ.get("CITYID_FUZZ_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    raise pytest.UsageError(f"CITYID_FUZZ_PROFILE must be ci or long, not {PROFILE!r}")
LONG = PROFILE == "long"
TOTAL_SECONDS = float(os.environ.get("CITYID_FUZZ_SECONDS", "1200"))
ISSUER = "http://localhost"  # a host name: WebAuthn's RP ID cannot be an IP address
PASSWORD = "correct horse battery staple"
EMAIL = "fuzz.citizen@example.org"
REDIRECT = "https://rp.example/cb"

# Tables that change on a refused request by design: what was attempted, not what was done.
ATTEMPT_TABLES = frozenset(
    {
        "audit_event",  # every refusal is audited (db/audit.py)
        "audit_head",  # the audit chain's head moves with it
        "idp_seen_jti",  # replay cache (RFC 7523 §3 / RFC 9449 §11.1 jti)
        "sc_seen_proof",  # replay cache of device proofs
        "eid_seen_assertion",  # replay cache of SAML assertions
        "idp_login_throttle",  # failed-login counters (NIST SP 800-63B §5.2.2)
        "ca_ocsp_cache",  # a cache of signed OCSP answers (RFC 5019)
    }
)

# endpoint label -> [requests sent, responses >= 500]
STATS: dict[str, list[int]] = defaultdict(lambda: [0, 0])
# endpoint label -> status code -> responses (the report's spread: how deep requests got)
STATUSES: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))


def fuzz_settings(ci_examples: int) -> settings:
    """Hypothesis settings of one fuzz test: ``ci_examples`` in CI; batches in the long profile."""
    return settings(
        max_examples=ci_examples if not LONG else 300,
        deadline=None,  # wall-clock per example varies with the machine's load
        derandomize=not LONG,  # CI sends the same requests every run: reproducible, not flaky
        database=None,  # nothing remembered between runs (CI stays the same)
        suppress_health_check=list(HealthCheck),  # large and filtered inputs are the point
        print_blob=True,
    )


def run_budgeted(run: Callable[[], None], share: float) -> None:
    """Run a hypothesis test once (ci), or again and again for ``share`` of the long profile's
    time (the shares of all fuzz tests add up to 1)."""
    if not LONG:
        run()
        return
    end = time.monotonic() + TOTAL_SECONDS * share
    while time.monotonic() < end:
        run()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not STATS:
        return
    lines = [
        f"cityid fuzz report (profile {PROFILE})",
        f"{'endpoint':58} {'requests':>9} {'5xx':>5}  statuses",
    ]
    for label in sorted(STATS):
        sent, errors = STATS[label]
        spread = " ".join(f"{code}:{n}" for code, n in sorted(STATUSES[label].items()))
        lines.append(f"{label:58} {sent:>9} {errors:>5}  {spread}")
    total = sum(s for s, _ in STATS.values())
    errors = sum(e for _, e in STATS.values())
    lines.append(f"{'total':58} {total:>9} {errors:>5}")
    terminalreporter.write_sep("=", "fuzz report")
    for line in lines:
        terminalreporter.write_line(line)
    out = os.environ.get("CITYID_FUZZ_REPORT")
    if out:
        Path(out).write_text(
            json.dumps(
                {
                    "profile": PROFILE,
                    "requests": total,
                    "server_errors": errors,
                    "endpoints": {k: {"requests": v[0], "server_errors": v[1]} for k, v in STATS.items()},
                    "statuses": {k: dict(v) for k, v in STATUSES.items()},
                },
                indent=1,
            )
        )


# ----------------------------------------------------------------------------- the target


def table_digests(engine: Engine) -> dict[str, str]:
    """A digest of each table's rows (the attempt tables left out)."""
    from db import Base

    out: dict[str, str] = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name in ATTEMPT_TABLES:
                continue
            rows = sorted(repr(tuple(r)) for r in conn.execute(table.select()))
            out[table.name] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return out


@dataclass
class Target:
    app: Any
    engine: Engine
    keys: Any
    conf_client: str
    conf_secret: str
    public_client: str
    cc_client: str
    cc_secret: str
    account_id: str
    access_token: str = ""  # a client-credentials access token (RFC 9068)
    issuing_der: bytes = b""
    citizen: Any = None  # test client with the citizen's session cookie
    csrf: str = ""
    citizen_cookie: str = ""
    state: dict[str, str] = field(default_factory=dict)

    def anonymous(self) -> Any:
        return self.app.test_client()

    def login(self) -> None:
        """Log the citizen in (a new session, a new CSRF token)."""
        c = self.app.test_client()
        page = c.get("/login")
        token = _csrf(page.get_data(as_text=True))
        resp = c.post("/login", data={"csrf_token": token, "email": EMAIL, "password": PASSWORD})
        assert resp.status_code in (302, 303), resp.get_data(as_text=True)[:500]
        account = c.get("/account")
        assert account.status_code == 200, account.status_code
        self.citizen = c
        self.csrf = _csrf(account.get_data(as_text=True))
        cookie = c.get_cookie("cityid")
        assert cookie is not None
        self.citizen_cookie = cookie.value

    def ensure_citizen(self) -> None:
        """A new session if a fuzzed request ended it (a valid logout, say). Made directly in
        the database, as a password login makes it: the fuzzed wrong passwords for the citizen's
        address throttle logins (NIST SP 800-63B §5.2.2), as they should."""
        import datetime as dt

        from db import transaction, utcnow
        from idp.crypto import random_token
        from idp.models import LoginSession

        cookie = self.citizen.get_cookie("cityid")
        with self.app.extensions["cityid"].sessions() as s:
            live = cookie is not None and s.get(LoginSession, self.keys.token_digest(cookie.value))
            if live and live.account_id == self.account_id:
                return
        token = random_token(32)
        with transaction(self.app.extensions["cityid"].sessions) as s:
            s.add(
                LoginSession(
                    id_digest=self.keys.token_digest(token),
                    account_id=self.account_id,
                    expires_at=utcnow() + dt.timedelta(hours=8),
                    csrf_secret=random_token(32),
                    factors=json.dumps({"pwd": [int(time.time()), None]}),
                )
            )
        self.citizen.set_cookie("cityid", token, domain="localhost", path="/")
        page = self.citizen.get("/account")
        assert page.status_code == 200, page.status_code
        self.csrf = _csrf(page.get_data(as_text=True))

    def check(self, label: str, resp: Any, before: dict[str, str]) -> dict[str, str]:
        """The three checks; returns the state after the request (the next one's `before`)."""
        STATS[label][0] += 1
        status = resp.status_code
        STATUSES[label][status] += 1
        body = resp.get_data()
        if status >= 500:
            STATS[label][1] += 1
            raise AssertionError(f"{label}: {status} {body[:800]!r}")
        head = getattr(getattr(resp, "request", None), "method", "") == "HEAD"  # no body (RFC 9110 §9.3.2)
        if status >= 400 and not head and resp.mimetype in ("application/json", "application/problem+json"):
            try:
                doc = json.loads(body)
            except ValueError as exc:
                raise AssertionError(f"{label}: {status} JSON error is not JSON: {body[:300]!r}") from exc
            assert isinstance(doc, dict), f"{label}: JSON error is no object: {body[:300]!r}"
            assert isinstance(doc.get("error"), str) and doc["error"], f"{label}: no error: {doc}"
            assert isinstance(doc.get("error_description"), str), f"{label}: no error_description: {doc}"
        after = table_digests(self.engine)
        if status >= 400:
            changed = sorted(t for t in after if after[t] != before.get(t))
            assert not changed, f"{label}: refused ({status}) but changed {changed}: {body[:300]!r}"
        return after


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def _csrf(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "page has no CSRF token"
    return m.group(1)


@pytest.fixture(scope="session")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    import base64

    import cli
    from db import transaction
    from idp.accounts import create_account
    from idp.app import create_app
    from idp.clients import ClientSpec, add_client
    from idp.config import load_config
    from idp.instance import InstanceKeys

    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    cli._init_all(data_dir, ISSUER)  # like `cityid init`: database, keys, CA
    cfg = load_config(data_dir)
    app = create_app(cfg)
    rt = app.extensions["cityid"]
    keys = InstanceKeys.from_config(cfg)
    with transaction(rt.sessions) as s:
        conf, conf_secret = add_client(
            s, keys, ClientSpec(name="Fuzz confidential", client_id="fuzz-conf", redirect_uris=[REDIRECT])
        )
        pub, _ = add_client(
            s,
            keys,
            ClientSpec(
                name="Fuzz public",
                client_id="fuzz-public",
                redirect_uris=[REDIRECT],
                auth_method="none",
                post_logout_redirect_uris=["https://rp.example/bye"],
            ),
        )
        cc, cc_secret = add_client(
            s,
            keys,
            ClientSpec(name="Fuzz machine", client_id="fuzz-machine", grant_types=["client_credentials"]),
        )
        acct = create_account(s, keys, EMAIL, PASSWORD, verified=True, actor="admin")
        account_id = acct.id
        ids = (conf.client_id, pub.client_id, cc.client_id)
    assert conf_secret and cc_secret
    t = Target(
        app=app,
        engine=rt.engine,
        keys=keys,
        conf_client=ids[0],
        conf_secret=conf_secret,
        public_client=ids[1],
        cc_client=ids[2],
        cc_secret=cc_secret,
        account_id=account_id,
    )
    c = app.test_client()
    basic = base64.b64encode(f"{t.cc_client}:{cc_secret}".encode()).decode()
    tok = c.post(
        "/token",
        data={"grant_type": "client_credentials", "scope": "openid profile email"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert tok.status_code == 200, tok.get_data(as_text=True)
    t.access_token = tok.get_json()["access_token"]
    t.issuing_der = c.get("/pki/issuing.crt").get_data()
    t.login()
    yield t
    rt.courier.stop()
    rt.engine.dispose()
