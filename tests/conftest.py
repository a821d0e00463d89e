"""Shared fixtures: a fresh, migrated database per test on SQLite and (in CI) PostgreSQL.

Set ``CITYID_TEST_POSTGRES_URL`` (``.ci/run`` does) to run every database test on PostgreSQL
too. Each backend is migrated once per test session into a template; each test gets a copy.
"""

from __future__ import annotations

import os
import queue
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import flask
import jinja2
import jinja2.bccache
import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from db import make_engine, make_session_factory
from db.migrate import upgrade
from idp import crypto as idp_crypto

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PG_URL = os.environ.get("CITYID_TEST_POSTGRES_URL", "")
REQUIRE_PG = os.environ.get("CITYID_TEST_REQUIRE_POSTGRES") == "1"
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])
# The tests' PostgreSQL databases answer a COMMIT before its WAL reaches the disk
# (synchronous_commit = off): what they prove is what a transaction does and what others see of it,
# which is the same; a crash of the shared test server, the one thing that could lose such a
# commit, is not among them (tests/faults runs its own cluster, durable as in production, and
# kills and restarts it). CITYID_TEST_DURABLE_COMMITS=1 keeps every commit durable.
DURABLE_TEST_COMMITS = os.environ.get("CITYID_TEST_DURABLE_COMMITS") == "1"
# In this test process passwords are hashed with argon2id at the smallest cost (a login's hash
# took ~35 ms of CPU, thousands of times per run): what the tests prove of passwords does not
# depend on the cost. The production parameters are checked by tests/idp/test_password_hash.py,
# and every `cityid serve` the tests start hashes at them. CITYID_TEST_REAL_ARGON2=1 keeps them.
if os.environ.get("CITYID_TEST_REAL_ARGON2") != "1":
    idp_crypto.PASSWORD_HASHER = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    idp_crypto._DUMMY_HASH = idp_crypto.PASSWORD_HASHER.hash(secrets.token_urlsafe(16))


class _SharedTemplates(jinja2.BytecodeCache):
    """Every Flask app of this test process shares its compiled templates (each test's app
    compiled them again: ~3% of a run). Jinja checks each entry against the template's source."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


flask.Flask.jinja_options = {**flask.Flask.jinja_options, "bytecode_cache": _SharedTemplates()}

# The tests' own HTTP servers (serve_forever) look for shutdown() this often: the default 0.5 s
# cost every test that stops a server a quarter of a second on average.
SERVER_POLL_SECONDS = 0.02
# The servers the tests start skip the drain ahead of a production stop (`cityid serve
# --drain-seconds`, idp.health) unless a test asks for it: its seconds on every stop would add up.
os.environ.setdefault("CITYID_DRAIN_SECONDS", "0")


def pytest_sessionstart(session: pytest.Session) -> None:
    if REQUIRE_PG and not PG_URL:
        raise pytest.UsageError("CITYID_TEST_REQUIRE_POSTGRES=1 but no CITYID_TEST_POSTGRES_URL")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``postgresql_only`` exists for PostgreSQL only: its SQLite variant is not
    collected (deselected, never skipped: a skipped test in CI counts as a failing one). These
    are the tests about concurrent writers, which SQLite serialises by design."""
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.get_closest_marker("postgresql_only") and params.get("db_url") == "sqlite":
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _pg_admin() -> Engine:
    return make_engine(PG_URL, pool=False).execution_options(isolation_level="AUTOCOMMIT")


def _pg_url_for(name: str) -> str:
    base, _, _ = PG_URL.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tpl") / "template.sqlite3"
    engine = make_engine(f"sqlite:///{path}", pool=False)
    upgrade(engine)
    engine.dispose()  # the last connection to close checkpoints the WAL into the file
    return path


@pytest.fixture(scope="session")
def _pg_template() -> Iterator[str]:
    name = f"cityid_tpl_{secrets.token_hex(6)}"
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(_pg_url_for(name), pool=False)
    upgrade(engine)
    engine.dispose()
    yield name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# What a test may change beyond rows: tables, columns, indexes, constraints, functions, triggers,
# the migrations' heads and the database's own settings. A used database whose fingerprint is the
# template's is emptied and handed to a later test; any other is dropped.
_PG_FINGERPRINT = """
SELECT md5(coalesce(string_agg(x, '|' ORDER BY x), '')) FROM (
  SELECT table_name || '.' || column_name || ':' || data_type || ':' || coalesce(column_default, '')
    || ':' || is_nullable AS x FROM information_schema.columns WHERE table_schema = 'public'
  UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'
  UNION ALL SELECT conname || pg_get_constraintdef(oid) FROM pg_constraint
    WHERE connamespace = 'public'::regnamespace
  UNION ALL SELECT p.proname || md5(p.prosrc) FROM pg_proc p
    WHERE p.pronamespace = 'public'::regnamespace
  UNION ALL SELECT tgname FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL SELECT 'seq:' || sequencename FROM pg_sequences
  UNION ALL SELECT 'v:' || version_num FROM alembic_version
  UNION ALL SELECT 'set:' || array_to_string(setconfig, ',') FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
) parts
"""


class _Changed(Exception):
    """A used database whose fingerprint is no longer the template's."""


class _PgCopies:
    """Databases for the PostgreSQL tests, each as the template is: made ahead by a thread of
    this process, so the next one is ready when its test starts.

    ``CREATE DATABASE … TEMPLATE`` copies ~9 MB of catalog through the WAL and waits for the disk
    (~0.4 s of the server's and the kernel's time per test). So a database a test has used is
    recycled instead when its fingerprint (schema, functions, migration heads, settings) is still
    the template's: the thread ends every other connection to it, deletes every row but the
    migration heads (as the template: no other table has rows) and restarts every sequence. A
    test that changed more than rows (a migration test) leaves a database that is dropped.
    CITYID_TEST_FRESH_DATABASES=1 gives every test a new copy."""

    def __init__(self, template: str) -> None:
        self._template = template
        self._jobs: queue.SimpleQueue[str | None] = queue.SimpleQueue()  # "": have one ready; a name: recycle
        self._ready: queue.SimpleQueue[str | BaseException] = queue.SimpleQueue()
        self._fresh_only = os.environ.get("CITYID_TEST_FRESH_DATABASES") == "1"
        self._thread = threading.Thread(target=self._run, name="pg-copies", daemon=True)
        self._thread.start()
        self._jobs.put("")  # the first copy

    def _run(self) -> None:
        admin = _pg_admin()
        tpl = make_engine(_pg_url_for(self._template), pool=False)
        self._fingerprint: str | None = None  # a new copy's (its settings are not the template's)
        with tpl.connect() as conn:
            self._tables = list(
                conn.execute(
                    text(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                        "AND tablename <> 'alembic_version' ORDER BY tablename"
                    )
                ).scalars()
            )
            self._sequences = list(
                conn.execute(text("SELECT schemaname, sequencename, start_value FROM pg_sequences")).all()
            )
        tpl.dispose()
        try:
            while (job := self._jobs.get()) is not None:
                if job:
                    if self._fresh_only or not self._recycled(admin, job):
                        with admin.connect() as conn:
                            conn.execute(text(f'DROP DATABASE IF EXISTS "{job}" WITH (FORCE)'))
                    continue
                if self._ready.qsize() > 0:  # a recycled one is waiting
                    continue
                name = f"cityid_t_{secrets.token_hex(6)}"
                try:
                    with admin.connect() as conn:
                        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"'))
                        if not DURABLE_TEST_COMMITS:
                            conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
                    if self._fingerprint is None:
                        copy = make_engine(_pg_url_for(name), pool=False)
                        with copy.connect() as conn:
                            self._fingerprint = conn.execute(text(_PG_FINGERPRINT)).scalar_one()
                        copy.dispose()
                except Exception as exc:  # the test that takes it fails with the reason
                    self._ready.put(exc)
                else:
                    self._ready.put(name)
        finally:
            admin.dispose()

    def _recycled(self, admin: Engine, name: str) -> bool:
        """Empty the used database ``name`` under a new name and put it up for the next test if
        it still has a new copy's fingerprint. True when done with it (recycled, or dropped here
        after its rename); False: the caller drops it."""
        fresh = f"cityid_t_{secrets.token_hex(6)}"
        try:
            with admin.connect() as conn:  # a test's leftover connections (their locks with them)
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                        "WHERE datname = :d AND pid <> pg_backend_pid()"
                    ),
                    {"d": name},
                )
                # a new name: whatever of the old test still holds the old URL (an engine, a
                # thread) cannot reach the next test's data; the rename fails (and the database
                # is dropped) if anything connected again meanwhile
                conn.execute(text(f'ALTER DATABASE "{name}" RENAME TO "{fresh}"'))
            name = fresh
            engine = make_engine(_pg_url_for(name), pool=False)
            try:
                with engine.begin() as conn:
                    if conn.execute(text(_PG_FINGERPRINT)).scalar_one() != self._fingerprint:
                        raise _Changed(name)
                    conn.execute(text("SET LOCAL session_replication_role = replica"))  # no FK order
                    for table in self._tables:
                        conn.execute(text(f'DELETE FROM "{table}"'))
                    for schema, sequence, start in self._sequences:
                        conn.execute(
                            text("SELECT setval(:s, :v, false)"),
                            {"s": f'"{schema}"."{sequence}"', "v": start},
                        )
            finally:
                engine.dispose()
        except Exception:
            if name == fresh:  # renamed, then failed: dropped here under its new name
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                return True
            return False
        self._ready.put(name)
        return True

    def take(self) -> str:
        """A database as the template is; the next one is being made ready meanwhile."""
        got = self._ready.get(timeout=300)
        self._jobs.put("")
        if isinstance(got, BaseException):
            raise got
        return got

    def drop(self, name: str) -> None:
        """``name``'s test is over: recycled or dropped by the thread."""
        self._jobs.put(name)

    def close(self) -> None:
        """Drop the copy made ahead and wait for every drop."""
        self._jobs.put(None)
        self._thread.join(timeout=300)
        admin = _pg_admin()
        with admin.connect() as conn:
            while not self._ready.empty():
                got = self._ready.get()
                if isinstance(got, str):
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{got}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def _pg_copies(_pg_template: str) -> Iterator[_PgCopies]:
    copies = _PgCopies(_pg_template)
    yield copies
    copies.close()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, fully migrated database of each backend."""
    if request.param == "sqlite":
        tpl: Path = request.getfixturevalue("_sqlite_template")
        path = tmp_path / "cityid.sqlite3"
        shutil.copyfile(tpl, path)
        yield f"sqlite:///{path}"
        return
    copies: _PgCopies = request.getfixturevalue("_pg_copies")
    name = copies.take()
    try:
        yield _pg_url_for(name)
    finally:
        copies.drop(name)


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db_sessions(db_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(db_engine)


@pytest.fixture
def db_session(db_sessions: sessionmaker[Session]) -> Iterator[Session]:
    with db_sessions() as session:
        yield session


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One SoftHSM2 token per test process (label, user PIN); keys get random labels.

    SoftHSM reads its configuration when the library is first initialised, so the token must
    exist before any test loads the module.
    """
    if not (shutil.which("softhsm2-util") and Path(SOFTHSM_MODULE).exists()):
        pytest.fail("SoftHSM2 is not installed: run `make system-deps` (Debian package softhsm2)")
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    label, pin = f"cityid-{secrets.token_hex(4)}", "123456"
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "654321", "--pin", pin],
        check=True,
        capture_output=True,
    )
    return label, pin
