"""Database layer: the one declarative Base, engine and session factory, migrations.

Each package owns its tables (``pki/models.py``, ``smartcard/models.py``, ``idp/models.py``)
on :class:`Base`; one Alembic history (``db/migrations``) migrates them all.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, Select, create_engine, event, exc
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use aware UTC datetimes")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime()}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id(nbytes: int = 20) -> str:
    """A random URL-safe identifier (160 bits by default) that never starts with ``-``.

    Administrators pass these identifiers to the ``cityid`` CLI; one that began with ``-`` would
    be read as an option. Redrawing such a value (1 in 64) costs less than 0.03 bits of entropy.
    """
    while True:
        value = secrets.token_urlsafe(nbytes)
        if not value.startswith("-"):
            return value


def make_engine(url: str, *, pool: bool = True) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout."""
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        kwargs["poolclass"] = NullPool if not pool else None
        if kwargs["poolclass"] is None:
            del kwargs["poolclass"]
    elif not pool:
        kwargs["poolclass"] = NullPool
    url, threshold = _prepare_threshold(url)
    if threshold is not _UNSET:
        kwargs["connect_args"] = {"prepare_threshold": threshold}
    engine = create_engine(url, **kwargs)
    if not url.startswith("sqlite") and pool:
        _ping_when_idle(engine)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy emit BEGIN itself so that BEGIN IMMEDIATE works (see below).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        # Writers take the lock at BEGIN: no deadlock-prone lock upgrades mid-transaction. Emitted
        # by the dialect's own begin on the driver connection, not by a "begin" event listener: a
        # connection event makes SQLAlchemy dispatch events around every statement of every
        # request (measured: about 25 µs per request on the token endpoint).
        engine.dialect.do_begin = _begin_immediate  # type: ignore[method-assign]

    return engine


_UNSET: Any = object()


def _prepare_threshold(url: str) -> tuple[str, Any]:
    """``?prepare_threshold=none`` (or a number) on a PostgreSQL URL: psycopg's
    ``prepare_threshold``, taken out of the URL (libpq does not know it).

    psycopg prepares a statement on the server after its fifth execution on a connection. A
    connection pooler in transaction mode (PgBouncer before 1.21, or without
    ``max_prepared_statements``) hands each transaction another server connection, which has
    not got it ("prepared statement "_pg3_0" does not exist"; bench/faults.py --pgbouncer):
    ``none`` turns server-side preparing off (docs/scaling.md)."""
    from sqlalchemy.engine import make_url

    if not url.startswith("postgresql"):
        return url, _UNSET
    u = make_url(url)
    if "prepare_threshold" not in u.query:
        return url, _UNSET
    raw = u.query["prepare_threshold"]
    value = raw if isinstance(raw, str) else raw[-1]
    threshold = None if value.lower() in ("none", "off", "") else int(value)
    return u.difference_update_query(["prepare_threshold"]).render_as_string(hide_password=False), threshold


# A pooled connection unused for this long is pinged before it is handed out.
IDLE_PING_SECONDS = 2.0


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling for connections that sat in the pool.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: one more round trip on every request
    (measured: 17% of the token endpoint's CPU on PostgreSQL). A connection handed back less than
    IDLE_PING_SECONDS ago was working then; after a database restart every connection has been
    idle longer than that by the time the server is back, and is pinged and replaced. A restart
    shorter than that fails the request that meets a dead connection, and SQLAlchemy then
    replaces the whole pool (``invalidate_pool_on_disconnect``).
    """

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("returned_at", 0.0) <= IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as err:
            if engine.dialect.is_disconnect(err, dbapi_conn, None):
                raise exc.DisconnectionError() from err  # the pool connects anew (up to 3 times)
            raise


def _begin_immediate(dbapi_connection: Any) -> None:
    dbapi_connection.execute("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, future=True)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def first_unclaimed(session: Session, query: Select[Any]) -> Any:
    """The first row of ``query``, locked for this transaction; on PostgreSQL, rows another
    worker has locked are skipped (``SKIP LOCKED``), on SQLite the write lock taken at BEGIN
    serialises the claimers. For outboxes whose rows each worker claims with a lease."""
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return session.execute(query.limit(1)).scalar()


def import_all_models() -> None:
    """Import every package's models so that ``Base.metadata`` knows all tables."""
    import importlib

    from db import audit  # noqa: F401

    for name in (
        "idp.models",
        "idp.eid_models",
        "idp.webauthn_models",
        "pki.models",
        "smartcard.models",
        "signing.citizen_models",
        "idp.vci.models",
        "idp.insights.models",
    ):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a package without tables yet
            if exc.name != name:
                raise
