"""City scale on PostgreSQL: seed N accounts, measure the hot paths, EXPLAIN every statement they run.

Prints one JSON document. Usage:

    python -m bench.scale --accounts 10000
    python -m bench.scale --accounts 1000000 --seconds 20 [--keep]

What it does:

1. A new database ``cityid_scale_<N>_<hex>`` beside ``--db-url`` (dropped at the end unless
   ``--keep``), a data dir with its ``cityid.toml``, ``cityid init`` (migrations, CA, signing keys).
2. Seeds in bulk (psycopg ``COPY``) through the real code for what is computed per account: the
   address sealed with ``InstanceKeys.personal_data`` (AES-256-GCM, the field's associated data),
   the blind index ``InstanceKeys.email_lookup``, refresh tokens stored as ``token_digest``. The
   argon2id password hash is computed ONCE (``idp.crypto.hash_password``) and reused for every
   account, so any seeded citizen can log in with ``PASSWORD``. Per account: one consent and one
   grant with one live refresh token (the login client, ``clients[0]``). 20 clients
   (``idp.clients.add_client``). 10 % of accounts have an enrolled device: ``sc_device`` and
   ``ca_certificate`` rows shaped like real ones, SYNTHETIC: random serials and fingerprints, the
   DER of one real device certificate reused (the rows are never parsed on the hot paths; the
   OCSP fast path signs from the row's status). ``--real-devices`` accounts get a REAL enrolment
   (``smartcard.enroll.enrol`` with an Android key attestation under a test root) for the PKI-2FA
   and OCSP measurements. Not seeded: sessions and audit entries (they grow with activity, not
   with accounts), e-mail tokens, mail outbox.
3. EXPLAIN: each hot path runs once in-process (Flask test client on the seeded database); every
   statement is captured (a SQLAlchemy ``before_cursor_execute`` listener, plus the raw psycopg
   cursor for the statements ``db.driver.Prepared`` and the OCSP fast path run beneath SQLAlchemy)
   with its real parameters, and ``EXPLAIN (FORMAT JSON)`` runs on each. Any ``Seq Scan`` over a
   table whose row count grows with accounts is listed in ``seq_scans``.
4. Measures with ``cityid serve`` (one worker) pinned to core 0 and the load (threads of
   ``requests``) pinned to core 1, ``--seconds`` each: password login (authorize, login page,
   POST /login with argon2id, authorize -> code, POST /token with PKCE), token refresh, client
   credentials, userinfo, OCSP (POST, real certificates). PKI-2FA verification
   (``smartcard.authenticate.approve``: JWS proof, path validation, status, challenge) runs
   in-process pinned to core 0 with the server stopped. Rate and p50/p99 of each.
5. Database size: ``pg_database_size`` and ``pg_total_relation_size`` of every table, per account.
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
import contextlib
import datetime as dt
import hashlib
import json
import random
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from bench._server import ROOT, cli, free_port

PASSWORD = "correct horse battery staple"
REDIRECT = "http://127.0.0.1:9/cb"
CLIENTS = 20
DEVICE_SHARE = 10  # one account in ten has a device
# Tables whose rows grow with the number of accounts (a seq scan over one is a finding).
GROWING = {
    "idp_account",
    "idp_grant",
    "idp_refresh_token",
    "idp_consent",
    "idp_session",
    "idp_code",
    "idp_email_token",
    "idp_login_throttle",
    "idp_mail_outbox",
    "idp_logout_outbox",
    "idp_revoked_jti",
    "idp_seen_jti",
    "sc_device",
    "sc_challenge",
    "sc_device_grant",
    "sc_seen_proof",
    "ca_certificate",
    "ca_ocsp_cache",
    "audit_event",
    "webauthn_credential",
    "eid_link",
}


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > core:
        os.sched_setaffinity(0, {core})


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * q))] * 1000, 2)


# --------------------------------------------------------------------------- database


def _create_database(admin_url: str, n: int) -> tuple[str, str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"cityid_scale_{n}_{secrets.token_hex(4)}"
    eng = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return name, make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _drop_database(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    eng = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    eng.dispose()


def _psycopg_dsn(url: str) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}" + (
        f" password={u.password}" if u.password else ""
    )


# --------------------------------------------------------------------------- seeding


def seed(
    dsn: str, keys: Any, n: int, login_client: str, issuer_id: str, cert_der: bytes, batch: int
) -> dict[str, Any]:
    """COPY ``n`` accounts (+ consent, grant, refresh token each; a device for one in ten)."""
    import psycopg

    from db import new_id, utcnow
    from idp.crypto import hash_password

    pw_hash = hash_password(PASSWORD)  # once: argon2id costs ~50 ms, 5M of them would be days
    now = utcnow()
    expires = now + dt.timedelta(days=30)
    cert_not_after = now + dt.timedelta(days=365)
    amr = '["pwd"]'
    t0 = time.perf_counter()
    rows = 0
    with psycopg.connect(dsn) as conn:
        for start in range(0, n, batch):
            stop = min(n, start + batch)
            accounts, consents, grants, refresh, devices, certs = [], [], [], [], [], []
            for i in range(start, stop):
                aid = new_id()
                email = f"citizen{i}@scale.example"
                accounts.append(
                    (
                        aid,
                        keys.personal_data.seal(email.encode(), f"email:{aid}"),  # as accounts.create_account
                        keys.email_lookup(email),
                        now,
                        pw_hash,
                        False,
                        "de",
                        now,
                        False,
                    )
                )
                consents.append((aid, login_client, "openid email", now))
                gid = new_id()
                grants.append((gid, login_client, aid, "openid email", int(now.timestamp()), amr, now))
                refresh.append((keys.token_digest(refresh_token(i)), gid, "openid email", now, expires))
                if i % DEVICE_SHARE == 0:
                    did = new_id()
                    serial = secrets.token_hex(20)
                    fp = secrets.token_hex(32)
                    spki = secrets.token_hex(32)
                    devices.append(
                        (
                            did,
                            aid,
                            "Phone",
                            "android-key",
                            "TrustedEnvironment",
                            2,
                            "ok",
                            "{}",
                            spki,
                            serial,
                            fp,
                            cert_not_after,
                            now,
                        )
                    )
                    certs.append(
                        (
                            serial,
                            issuer_id,
                            "device-auth",
                            f"urn:cityid:device:{did}",
                            spki,
                            now,
                            cert_not_after,
                            "issued",
                            int(serial, 16) % 16,
                            fp,
                            cert_der,
                            now,
                        )
                    )
            with conn.cursor() as cur:
                for table, cols, data in (
                    (
                        "idp_account",
                        "id, email_enc, email_index, email_verified_at, password_hash, disabled, locale,"
                        " created_at, self_registered",
                        accounts,
                    ),
                    ("idp_consent", "account_id, client_id, scope, granted_at", consents),
                    ("idp_grant", "id, client_id, account_id, scope, auth_time, amr, created_at", grants),
                    ("idp_refresh_token", "token_digest, grant_id, scope, created_at, expires_at", refresh),
                    (
                        "sc_device",
                        "id, account_id, name, type, security_level, max_level, assessment, attestation,"
                        " spki_sha256, cert_serial, cert_fingerprint, cert_not_after, enrolled_at",
                        devices,
                    ),
                    (
                        "ca_certificate",
                        "serial, issuer_id, profile, subject, spki_sha256, not_before, not_after, status,"
                        " shard, fingerprint_sha256, der, created_at",
                        certs,
                    ),
                ):
                    with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                        for row in data:
                            copy.write_row(row)
                    rows += len(data)
            conn.commit()
            if start and (start // batch) % 10 == 0:
                rate = stop / (time.perf_counter() - t0)
                print(f"seeded {stop} accounts, {rate:.0f}/s", file=sys.stderr, flush=True)
        conn.execute("ANALYZE")
        conn.commit()
    wall = time.perf_counter() - t0
    return {"seconds": round(wall, 1), "accounts_per_s": round(n / wall, 1), "rows": rows}


def refresh_token(i: int) -> str:
    return f"scale-refresh-token-{i:08d}-{SEED_SALT}"


SEED_SALT = secrets.token_hex(8)


# --------------------------------------------------------------------------- real devices


class Devices:
    """Real enrolments (Android key attestation under a test root) for PKI-2FA and OCSP."""

    def __init__(self, cfg: Any, sessions: Any, account_ids: list[str], tmp: Path) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        import pki
        from attestation import AndroidApp, AndroidKeyEvidence, RevocationList, TrustStore
        from db import transaction, utcnow
        from smartcard import challenges
        from smartcard.enroll import EnrolRequest, enrol
        from smartcard.evidence import make_android_key_attestation, make_intermediate, make_test_root
        from smartcard.models import ENROL
        from smartcard.settings import SmartcardSettings
        from smartcard.softtoken import SoftToken

        self.cfg, self.sessions = cfg, sessions
        store = pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase)
        with sessions() as s:
            self.ca = pki.load_ca(s, cfg.ca, store, cfg.issuer)
        root = make_test_root()
        digest = hashlib.sha256(b"bench app").digest()
        self.settings = SmartcardSettings(
            trust=TrustStore.of(
                google_roots=[root.certificate],
                android_revocations=RevocationList.from_json(b'{"entries": {}}', fetched_at=utcnow()),
            ),
            apps=(AndroidApp("de.musterstadt.cityapp", frozenset({digest})),),
        )
        inter = make_intermediate(root, "TEE")
        self.tokens: list[tuple[str, Any]] = []
        self.certs: list[Any] = []
        from cryptography import x509

        for account in account_ids:
            with transaction(sessions) as s:
                issued, _row = challenges.create(
                    s, purpose=ENROL, account_id=account, ttl=dt.timedelta(minutes=30), now=utcnow()
                )
            key = ec.generate_private_key(ec.SECP256R1())
            token = SoftToken(tmp, {"server": cfg.issuer}, key)
            chain = make_android_key_attestation(
                key.public_key(),
                challenges.b64url_decode(issued.value, "c"),
                "de.musterstadt.cityapp",
                digest,
                root=root,
                intermediates=[inter],
            )
            with sessions() as s:
                r = enrol(
                    s,
                    self.ca,
                    self.settings,
                    EnrolRequest(
                        account, issued.value, token.csr(), AndroidKeyEvidence(tuple(chain)), "bench"
                    ),
                    now=utcnow(),
                )
                s.commit()
            token.state["certificate"] = r.certificate_pem.decode()
            self.tokens.append((account, token))
            self.certs.append(x509.load_pem_x509_certificate(r.certificate_pem))

    def proofs(self, n: int) -> list[Any]:
        """``n`` pending PKI-2FA challenges and their signed answers."""
        from db import transaction, utcnow
        from policies import Level
        from smartcard import authenticate

        url = f"{self.cfg.issuer}/api/smartcard/approve"
        out = []
        for i in range(n):
            account, token = self.tokens[i % len(self.tokens)]
            with transaction(self.sessions) as s:
                login = authenticate.start(
                    s,
                    self.settings,
                    account_id=account,
                    session_sid=f"scale-{i}-{secrets.token_hex(4)}",
                    service_name="Scale",
                    amount=None,
                    level=Level.SUBSTANTIAL,
                    now=utcnow(),
                )
                item = next(
                    p
                    for p in authenticate.pending_for(s, "", account, utcnow())
                    if p.public_id == login.public_id
                )
            out.append(
                token.proof(
                    "POST",
                    url,
                    challenge=item.challenge,
                    binding_code=item.binding_code,
                    service_name=item.service_name,
                    amount=None,
                    decision="approve",
                )
            )
        return out

    def approve(self, proof: Any) -> None:
        from db import utcnow
        from smartcard import authenticate

        with self.sessions() as s:
            authenticate.approve(
                s, self.ca, self.settings, proof, url=f"{self.cfg.issuer}/api/smartcard/approve", now=utcnow()
            )
            s.commit()

    def ocsp_requests(self) -> list[bytes]:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509 import ocsp

        return [
            ocsp.OCSPRequestBuilder()
            .add_certificate(c, self.ca.certificate, hashes.SHA256())
            .build()
            .public_bytes(serialization.Encoding.DER)
            for c in self.certs
        ]


# --------------------------------------------------------------------------- the flows


class Flows:
    """The hot paths, over any ``requests``-like client (HTTP, or the Flask test client)."""

    def __init__(self, n: int, client: tuple[str, str], machine: tuple[str, str]) -> None:
        self.n = n
        self.cid, self.secret = client
        self.mcid, self.msecret = machine
        self.lock = threading.Lock()
        self.fresh = list(range(n))
        random.shuffle(self.fresh)
        self.access_tokens: list[str] = []

    def next_refresh(self) -> int:
        with self.lock:
            return self.fresh.pop()

    def login(self, http: Any, url: str) -> None:
        # a new browser each time (a kept session cookie would skip the password)
        http = http.fresh() if isinstance(http, TestClientHttp) else requests.Session()
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
        params = {
            "response_type": "code",
            "client_id": self.cid,
            "redirect_uri": REDIRECT,
            "scope": "openid email",
            "state": "s",
            "code_challenge": challenge.decode(),
            "code_challenge_method": "S256",
        }
        r = http.get(f"{url}/authorize", params=params, allow_redirects=False)
        page = http.get(_abs(url, r.headers["Location"]))
        m = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert m, (r.status_code, r.headers.get("Location"), page.status_code, page.text[:300])
        token = m.group(1)
        email = f"citizen{random.randrange(self.n)}@scale.example"
        r = http.post(
            f"{url}/login",
            data={"csrf_token": token, "email": email, "password": PASSWORD},
            allow_redirects=False,
        )
        if r.headers["Location"].startswith("/"):  # not answered with the code at once
            r = http.get(_abs(url, r.headers["Location"]), allow_redirects=False)
        code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
        r = http.post(
            f"{url}/token",
            auth=(self.cid, self.secret),
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
            },
        )
        assert r.status_code == 200, r.text

    def refresh(self, http: Any, url: str) -> None:
        i = self.next_refresh()
        r = http.post(
            f"{url}/token",
            auth=(self.cid, self.secret),
            data={"grant_type": "refresh_token", "refresh_token": refresh_token(i)},
        )
        assert r.status_code == 200, r.text
        with self.lock:
            if len(self.access_tokens) < 5000:
                self.access_tokens.append(r.json()["access_token"])

    def client_credentials(self, http: Any, url: str) -> None:
        r = http.post(
            f"{url}/token", auth=(self.mcid, self.msecret), data={"grant_type": "client_credentials"}
        )
        assert r.status_code == 200, r.text

    def userinfo(self, http: Any, url: str) -> None:
        at = random.choice(self.access_tokens)
        r = http.get(f"{url}/userinfo", headers={"Authorization": f"Bearer {at}"})
        assert r.status_code == 200, r.text

    def ocsp(self, requests_der: list[bytes]) -> Callable[[Any, str], None]:
        def run(http: Any, url: str) -> None:
            r = http.post(
                f"{url}/pki/ocsp",
                data=random.choice(requests_der),
                headers={"Content-Type": "application/ocsp-request"},
            )
            assert r.status_code == 200 and r.content, r.status_code

        return run


def _abs(url: str, location: str) -> str:
    return location if location.startswith("http") else url + location


class TestClientHttp:
    """The few ``requests`` calls the flows make, on a Flask test client (in-process capture)."""

    def __init__(self, app: Any, base: str) -> None:
        self.app = app
        self.c = app.test_client()
        self.base = base

    def fresh(self) -> TestClientHttp:
        return TestClientHttp(self.app, self.base)

    def _split(self, url: str) -> tuple[str, str]:
        parts = urlsplit(url)
        return parts.path, parts.query

    def get(self, url: str, params: Any = None, headers: Any = None, allow_redirects: bool = True) -> Any:
        path, query = self._split(url)
        r = self.c.get(path, query_string=params or query, headers=headers or {}, base_url=self.base)
        return _Resp(r)

    def post(self, url: str, data: Any = None, auth: Any = None, headers: Any = None, **_: Any) -> Any:
        path, _q = self._split(url)
        h = dict(headers or {})
        if auth:
            h["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        return _Resp(self.c.post(path, data=data, headers=h, base_url=self.base))


class _Resp:
    def __init__(self, r: Any) -> None:
        self.status_code = r.status_code
        self.headers = r.headers
        self.content = r.get_data()
        self.text = self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.text)


# --------------------------------------------------------------------------- EXPLAIN


class Capture:
    """Every statement the process sends to PostgreSQL, with its parameters, per hot path."""

    def __init__(self) -> None:
        self.current = ""
        self.seen: dict[tuple[str, str], Any] = {}

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        import psycopg
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        def listener(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
            self._add(statement, params[0] if many and params else params)

        # db.driver.Prepared and the OCSP fast path run statements on the DBAPI cursor, beneath
        # SQLAlchemy's events: those are caught on psycopg's cursor.
        original = psycopg.Cursor.execute

        def execute(cur: Any, query: Any, params: Any = None, **kw: Any) -> Any:
            if isinstance(query, str) and not getattr(self, "_in_listener", False):
                self._add(query, params)
            return original(cur, query, params, **kw)

        event.listen(Engine, "before_cursor_execute", listener)
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        try:
            yield
        finally:
            psycopg.Cursor.execute = original  # type: ignore[method-assign]
            event.remove(Engine, "before_cursor_execute", listener)

    def _add(self, statement: str, params: Any) -> None:
        head = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        if head not in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH"):
            return
        key = (self.current, " ".join(statement.split()))
        self.seen.setdefault(key, params)


def explain_all(dsn: str, capture: Capture) -> dict[str, Any]:
    """EXPLAIN each captured statement with its parameters; seq scans over growing tables."""
    import psycopg

    findings: list[dict[str, Any]] = []
    explained = 0
    failed: list[str] = []
    no_index: list[dict[str, Any]] = []
    plans: dict[str, list[str]] = {}
    with psycopg.connect(dsn) as conn:
        sizes = dict(
            conn.execute("SELECT relname, reltuples::bigint FROM pg_class WHERE relkind = 'r'").fetchall()
        )
        for (path, sql), params in capture.seen.items():
            try:
                plan = _explain(conn, sql, params, seqscan=True)
                # the tables the seed leaves empty (sessions, codes, challenges, the OCSP cache)
                # get a seq scan from the planner whatever their indexes: with seq scans
                # disabled, one that remains means no index can serve the statement
                forced = _explain(conn, sql, params, seqscan=False)
            except psycopg.Error as exc:
                failed.append(f"{path}: {sql[:120]}: {str(exc).splitlines()[0]}")
                continue
            explained += 1
            for node in _walk(forced):
                rel = node.get("Relation Name", "")
                if node["Node Type"] == "Seq Scan" and rel in GROWING:
                    no_index.append({"path": path, "table": rel, "statement": sql[:300]})
            nodes = list(_walk(plan))
            plans.setdefault(path, []).append(
                sql[:100]
                + " -> "
                + ", ".join(
                    sorted(
                        {
                            f"{n['Node Type']}:{n.get('Relation Name', '')}"
                            for n in nodes
                            if "Relation Name" in n
                        }
                    )
                )
            )
            for node in nodes:
                if node["Node Type"] == "Seq Scan":
                    rel = node.get("Relation Name", "")
                    findings.append(
                        {
                            "path": path,
                            "table": rel,
                            "table_rows": sizes.get(rel, 0),
                            "grows_with_accounts": rel in GROWING,
                            "statement": sql[:300],
                        }
                    )
    bad = [f for f in findings if f["grows_with_accounts"] and f["table_rows"] >= 1000]
    return {
        "statements": explained,
        "seq_scans_on_growing_tables": bad,
        "no_usable_index": no_index,
        "seq_scans_other": sorted({f["table"] for f in findings if not f["grows_with_accounts"]}),
        "explain_failed": failed,
        "plans": plans,
    }


# Foreign keys whose referencing columns lead no index: deleting a referenced row (an account,
# a grant, a device) scans the referencing table (ON DELETE CASCADE or the RESTRICT check).
UNINDEXED_FK_SQL = """
SELECT c.conrelid::regclass::text, c.conname, c.confrelid::regclass::text,
       array_to_string(array(SELECT a.attname FROM unnest(c.conkey) k
                             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k), ',')
FROM pg_constraint c
WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace
  AND NOT EXISTS (
    SELECT 1 FROM pg_index i
    WHERE i.indrelid = c.conrelid
      AND (i.indkey::int2[])[0:array_length(c.conkey, 1) - 1] @> c.conkey
      AND (i.indkey::int2[])[0:array_length(c.conkey, 1) - 1] <@ c.conkey)
ORDER BY 1, 2
"""


def unindexed_foreign_keys(dsn: str) -> list[dict[str, str]]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return [
            {"table": t, "constraint": name, "references": ref, "columns": cols}
            for t, name, ref, cols in conn.execute(UNINDEXED_FK_SQL).fetchall()
            if t in GROWING
        ]


def _explain(conn: Any, sql: str, params: Any, *, seqscan: bool) -> dict[str, Any]:
    import psycopg

    with conn.transaction(force_rollback=True):  # EXPLAIN writes nothing; SET LOCAL ends here
        cur = psycopg.ClientCursor(conn)
        if not seqscan:
            cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        row = cur.fetchone()
        assert row is not None
        plan: dict[str, Any] = row[0][0]["Plan"]
        return plan


def _walk(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _walk(child)


# --------------------------------------------------------------------------- load


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` and their children (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, seen, todo = 0.0, set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except (OSError, ValueError, IndexError):
            pass
    return total


class CpuMeter:
    """CPU seconds of the server's processes and of PostgreSQL's backends for the database: on a
    shared machine the CPU per operation is steadier than the rate or the latency."""

    def __init__(self, server_pid: int, dsn: str) -> None:
        self.server_pid, self.dsn = server_pid, dsn

    def _backends(self) -> list[int]:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return [
                r[0]
                for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchall()
            ]

    def read(self) -> tuple[float, float, list[int]]:
        backends = self._backends()
        return _cpu_seconds([self.server_pid]), _cpu_seconds(backends), backends


def measure(
    fn: Callable[[Any, str], None], url: str, seconds: float, threads: int, cpu: CpuMeter | None = None
) -> dict[str, Any]:
    """``fn`` from ``threads`` threads for ``seconds``: rate, p50/p99, errors, CPU per operation."""
    before = cpu.read() if cpu else None
    stop = time.perf_counter() + seconds
    lock = threading.Lock()
    lat: list[float] = []
    errors: list[str] = []

    def worker() -> None:
        http = requests.Session()
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                fn(http, url)
            except Exception as exc:  # counted and reported
                with lock:
                    errors.append(repr(exc)[:200])
                continue
            with lock:
                lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {
        "n": len(lat),
        "per_s": round(len(lat) / wall, 1),
        "p50_ms": _pct(lat, 0.5),
        "p99_ms": _pct(lat, 0.99),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }
    if cpu and before and lat:
        server, _pg, _b = cpu.read()
        pg_after = _cpu_seconds(before[2])  # the same backends (a pooled connection each)
        out["server_cpu_ms_per_op"] = round((server - before[0]) / len(lat) * 1000, 2)
        out["postgres_cpu_ms_per_op"] = round((pg_after - before[1]) / len(lat) * 1000, 2)
        out["ops_per_server_cpu_s"] = round(len(lat) / max(server - before[0], 1e-9), 1)
    return out


@contextlib.contextmanager
def serve(data: Path, url: str, port: int, core: int) -> Iterator[int]:
    log = open(data.parent / "serve.log", "wb")
    argv = ["taskset", "-c", str(core), sys.executable, "-m", "cli", "serve", "--data-dir", str(data)]
    proc = subprocess.Popen(
        [*argv, "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "1"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{url}/jwks.json", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "cityid serve did not start: " + (data.parent / "serve.log").read_text()[-2000:]
                )
            time.sleep(0.2)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--db-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--threads", type=int, default=8, help="load threads (core 1)")
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--real-devices", type=int, default=20)
    ap.add_argument("--keep", action="store_true", help="keep the database and data dir")
    ap.add_argument("--skip-load", action="store_true", help="seed and EXPLAIN only")
    a = ap.parse_args()
    n = a.accounts
    _pin(1)  # seeding, capture and load on core 1; the server (and PKI-2FA) on core 0
    from sqlalchemy import select

    from db import make_engine, make_session_factory, transaction
    from idp.clients import ClientSpec, add_client
    from idp.config import load_config
    from idp.instance import InstanceKeys
    from idp.models import Account
    from pki.models import CaAuthority, CaCertificate

    name, db_url = _create_database(a.db_url, n)
    tmp = Path(tempfile.mkdtemp(prefix="cityid-scale-"))
    data = tmp / "data"
    data.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (data / "cityid.toml").write_text(
        f'issuer = "{url}"\nsecret_key = "{secrets.token_urlsafe(32)}"\n'
        f'key_passphrase = "{secrets.token_urlsafe(32)}"\ndatabase_url = "{db_url}"\n'
    )
    result: dict[str, Any] = {"bench": "scale", "accounts": n, "database": name}
    try:
        cli(data, "init")
        cfg = load_config(data)
        keys = InstanceKeys.from_config(cfg)
        engine = make_engine(cfg.db_url)
        sessions = make_session_factory(engine)
        with transaction(sessions) as s:
            made = [
                add_client(
                    s,
                    keys,
                    ClientSpec(name=f"service {i}", redirect_uris=[REDIRECT], scope="openid email"),
                )
                for i in range(CLIENTS - 1)
            ]
            machine, msecret = add_client(
                s, keys, ClientSpec(name="machine", grant_types=["client_credentials"], scope="permits:read")
            )
            login_client = (made[0][0].client_id, made[0][1] or "")
            machine_client = (machine.client_id, msecret or "")
            issuer_id = s.execute(select(CaAuthority.id).where(CaAuthority.kind == "issuing")).scalar_one()
        # one real certificate's DER, reused by the synthetic device rows
        dev_tmp = tmp / "devices"
        dev_tmp.mkdir()
        with transaction(sessions) as s:
            first = s.execute(select(Account.id)).first()
        bootstrap_accounts: list[str] = []
        if first is None:  # no accounts yet: enrol on a throwaway one for the DER
            from idp.accounts import create_account

            with transaction(sessions) as s:
                bootstrap_accounts.append(
                    create_account(
                        s, keys, "bootstrap@scale.example", PASSWORD, verified=True, actor="admin"
                    ).id
                )
        boot = Devices(cfg, sessions, bootstrap_accounts, dev_tmp)
        with sessions() as s:
            cert_der = (
                s.execute(select(CaCertificate.der).where(CaCertificate.der.is_not(None))).scalars().first()
            )
        del boot
        result["seed"] = seed(
            _psycopg_dsn(db_url), keys, n, login_client[0], issuer_id, cert_der or b"", a.batch
        )
        print(f"seeded: {result['seed']}", file=sys.stderr, flush=True)
        # real devices for PKI-2FA and OCSP, on seeded accounts spread over the table
        with sessions() as s:
            picks = [
                s.execute(select(Account.id).where(Account.email_index == keys.email_lookup(e))).scalar_one()
                for e in (f"citizen{random.randrange(n)}@scale.example" for _ in range(a.real_devices))
            ]
        devices = Devices(cfg, sessions, picks, dev_tmp)
        flows = Flows(n, login_client, machine_client)
        ocsp_ders = devices.ocsp_requests()

        # ---- EXPLAIN every statement of the hot paths, on this database
        from idp.app import create_app

        app = create_app(cfg)
        capture = Capture()
        http = TestClientHttp(app, url)
        with capture.installed():
            for path, fn in (
                ("login", flows.login),
                ("refresh", flows.refresh),
                ("client_credentials", flows.client_credentials),
                ("userinfo", flows.userinfo),
                ("ocsp", flows.ocsp(ocsp_ders)),
            ):
                capture.current = path
                for _ in range(3):  # the first may differ (caches): the steady state too
                    fn(http, url)
            capture.current = "pki2fa"
            for proof in devices.proofs(2):
                devices.approve(proof)
            # not a hot path, but it grows with the tables it cleans: an erasure (GDPR Art. 17)
            capture.current = "account_erasure"
            from idp.keys import KeyCache
            from idp.privacy import erase_account

            with app.app_context(), transaction(sessions) as s:
                erase_account(
                    s, keys, KeyCache(cfg.key_passphrase), issuer=cfg.issuer, account_id=devices.tokens[-1][0]
                )
            devices.tokens.pop()
            devices.certs.pop()
        result["explain"] = explain_all(_psycopg_dsn(db_url), capture)
        result["explain"]["foreign_keys_without_index"] = unindexed_foreign_keys(_psycopg_dsn(db_url))
        flows.access_tokens.clear()

        # ---- load: server on core 0, load on core 1
        if not a.skip_load:
            ops: dict[str, Any] = {}
            with serve(data, url, port, core=0) as server_pid:
                meter = CpuMeter(server_pid, _psycopg_dsn(db_url))
                for op, fn, threads in (
                    ("password_login", flows.login, a.threads),
                    ("token_refresh", flows.refresh, a.threads),
                    ("client_credentials", flows.client_credentials, a.threads),
                    ("userinfo", flows.userinfo, a.threads),
                    ("ocsp", flows.ocsp(ocsp_ders), a.threads),
                ):
                    ops[op] = measure(fn, url, a.seconds, threads, meter)
                    print(f"{op}: {ops[op]}", file=sys.stderr, flush=True)
            # PKI-2FA in-process on core 0 (server stopped): the verification's own work
            proofs = devices.proofs(max(50, int(a.seconds * 30)))
            _pin(0)
            lat = []
            t0, c0 = time.perf_counter(), time.process_time()
            for proof in proofs:
                o0 = time.perf_counter()
                devices.approve(proof)
                lat.append(time.perf_counter() - o0)
            wall, cpu_s = time.perf_counter() - t0, time.process_time() - c0
            _pin(1)
            ops["pki2fa_verification"] = {
                "n": len(lat),
                "per_s": round(len(lat) / wall, 1),
                "p50_ms": _pct(lat, 0.5),
                "p99_ms": _pct(lat, 0.99),
                "errors": 0,
                "server_cpu_ms_per_op": round(cpu_s / len(lat) * 1000, 2),
                "ops_per_server_cpu_s": round(len(lat) / max(cpu_s, 1e-9), 1),
                "note": "in-process smartcard.authenticate.approve (no HTTP), one thread on core 0",
            }
            result["ops"] = ops

        # ---- database size
        with engine.connect() as conn:
            from sqlalchemy import text

            total = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
            tables = conn.execute(
                text(
                    "SELECT relname, pg_total_relation_size(oid), reltuples::bigint FROM pg_class "
                    "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 2 DESC"
                )
            ).all()
        result["database_size"] = {
            "total_mib": round(total / 2**20, 1),
            "bytes_per_account": round(total / n),
            "gib_per_million_accounts": round(total / n * 1e6 / 2**30, 2),
            "tables_mib": {r[0]: round(r[1] / 2**20, 1) for r in tables[:12]},
        }
        engine.dispose()
    finally:
        if a.keep:
            result["kept"] = {"data_dir": str(data), "database_url": db_url}
        else:
            _drop_database(a.db_url, name)
            shutil.rmtree(tmp, ignore_errors=True)
    result["machine_note"] = "2 cores shared with other jobs: rates are lower bounds, p99 noisy"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
