"""The audit log: every security decision, who/what/outcome/why, in a hash chain.

Each entry's hash covers the previous entry's hash, so that removing or changing an entry is
found by ``cityid audit verify``. The personal parts (actor, subject) enter the hash only through
a salted commitment, so that erasing a citizen (GDPR Art. 17) can pseudonymise them without
breaking the chain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from db import Base, driver, utcnow

log = logging.getLogger("cityid")

GENESIS = "0" * 64


class AuditEvent(Base):
    __tablename__ = "audit_event"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(200), index=True)  # erasure: migration 0017_idp
    action: Mapped[str] = mapped_column(String(100), index=True)
    outcome: Mapped[str] = mapped_column(String(20))
    subject: Mapped[str] = mapped_column(String(200), index=True)
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[str] = mapped_column(Text)
    salt: Mapped[str] = mapped_column(String(32))
    party_commitment: Mapped[str] = mapped_column(String(64))
    pseudonymised: Mapped[bool] = mapped_column(default=False)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """One row; locked for the write so that the chain has one order on every backend."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int | None] = mapped_column(ForeignKey("audit_event.seq"), nullable=True)
    last_hash: Mapped[str] = mapped_column(String(64))


class AuditPending(Base):
    """PostgreSQL: an entry committed with its transaction, not yet on the chain (see :func:`record`).

    ``tail`` is the hashed text after the previous hash (:func:`_hash_tail`), so that the
    database computes the same hash as :func:`_entry_hash`. Ids may have gaps; sequence numbers
    are given on the chain."""

    __tablename__ = "audit_pending"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(20))
    subject: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[str] = mapped_column(Text)
    salt: Mapped[str] = mapped_column(String(32))
    party_commitment: Mapped[str] = mapped_column(String(64))
    tail: Mapped[str] = mapped_column(Text)


def _commitment(salt: str, actor: str, subject: str) -> str:
    return hashlib.sha256(f"{salt}\x00{actor}\x00{subject}".encode()).hexdigest()


def _hash_tail(
    at: dt.datetime, action: str, outcome: str, reason: str, details: str, party_commitment: str
) -> str:
    """The hashed JSON after its first element, the previous hash: ``,"<at>",…]``."""
    return json.dumps(
        [at.isoformat(), action, outcome, reason, details, party_commitment],
        separators=(",", ":"),
        ensure_ascii=False,
    )[1:]


def _entry_hash(
    prev: str, at: dt.datetime, action: str, outcome: str, reason: str, details: str, party_commitment: str
) -> str:
    # json.dumps([prev, at, action, …]) compact, without escaping: prev is hex, so it needs no
    # JSON escaping and the text is '["' + prev + '",' + the tail (what the PostgreSQL append hashes)
    body = f'["{prev}",' + _hash_tail(at, action, outcome, reason, details, party_commitment)
    return hashlib.sha256(body.encode()).hexdigest()


_HEAD = cast(Table, AuditHead.__table__)
_EVENT = cast(Table, AuditEvent.__table__)
# Compiled once per dialect and run on the driver connection: this runs on every audited request.
_EVENT_COLUMNS = [
    "at",
    "actor",
    "action",
    "outcome",
    "subject",
    "reason",
    "details",
    "salt",
    "party_commitment",
    "pseudonymised",
    "prev_hash",
    "hash",
]
_SELECT_HEAD = driver.Prepared(
    select(_HEAD.c.last_hash, _HEAD.c.last_seq).where(_HEAD.c.id == 1).with_for_update(), []
)
_INSERT_EVENT = driver.Prepared(insert(_EVENT).returning(_EVENT.c.seq), ["seq", *_EVENT_COLUMNS])
_UPDATE_HEAD = driver.Prepared(
    update(_HEAD).where(_HEAD.c.id == 1).values(last_hash=bindparam("h"), last_seq=bindparam("s")), []
)
_PENDING = cast(Table, AuditPending.__table__)
_PENDING_COLUMNS = [c for c in _EVENT_COLUMNS if c in _PENDING.c] + ["tail"]
_INSERT_PENDING = driver.Prepared(insert(_PENDING).returning(_PENDING.c.id), _PENDING_COLUMNS)
# session.info key: (the driver connection, the first pending id) of a transaction that wrote some
_PENDING_KEY = "cityid.audit_pending"


def record(
    session: Session,
    *,
    action: str,
    outcome: str,
    actor: str = "system",
    subject: str = "",
    reason: str = "",
    details: Mapping[str, Any] | None = None,
) -> None:
    """Append an audit entry in the caller's transaction (it commits or rolls back with it).

    Core statements built once, run on the driver connection (db.driver): this is on every hot
    path. SQLite: the entry goes onto the chain here, under the write lock its BEGIN IMMEDIATE
    took. PostgreSQL: the entry is written to ``audit_pending`` without any lock, and chained right
    after the commit (:func:`chain_committed`): no transaction holds the chain head while its
    commit is flushed to disk, so audited writers of every instance commit side by side.
    """
    if outcome not in ("success", "failure", "denied", "info"):
        raise ValueError(f"unknown audit outcome {outcome!r}")
    session.flush()  # pending ORM changes first (an error there is the caller's, not the log's)
    actor, subject = actor[:200], subject[:200]
    salt = secrets.token_hex(16)
    at = utcnow()
    details_json = json.dumps(dict(details or {}), sort_keys=True, default=str)
    commitment = _commitment(salt, actor, subject)
    entry: dict[str, Any] = {
        "at": at,
        "actor": actor,
        "action": action,
        "outcome": outcome,
        "subject": subject,
        "reason": reason,
        "details": details_json,
        "salt": salt,
        "party_commitment": commitment,
    }
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        entry["tail"] = _hash_tail(at, action, outcome, reason, details_json, commitment)
        pending_id = _INSERT_PENDING.run(session, entry)[0][0]
        dbapi_connection = conn.connection.dbapi_connection
        held = session.info.get(_PENDING_KEY)
        if held is None or held[0] is not dbapi_connection:  # the transaction's first entry
            session.info[_PENDING_KEY] = (dbapi_connection, pending_id)
        return
    head = _SELECT_HEAD.run(session, {})
    if head:
        prev, last_seq = head[0][0], head[0][1]
    else:
        conn.execute(insert(_HEAD).values(id=1, last_hash=GENESIS, last_seq=None))
        prev, last_seq = GENESIS, None
    entry_hash = _entry_hash(prev, at, action, outcome, reason, details_json, commitment)
    entry |= {"seq": (last_seq or 0) + 1, "pseudonymised": False, "prev_hash": prev, "hash": entry_hash}
    seq = _INSERT_EVENT.run(session, entry)[0][0]
    _UPDATE_HEAD.run(session, {"h": entry_hash, "s": seq})


CHAIN_SQL = "SELECT cityid_audit_chain(%s)"


def chain_committed(dbapi_connection: Any, since: int | None = None) -> int:
    """PostgreSQL: put committed pending entries onto the chain, in a transaction of its own on
    this idle driver connection: one statement, one round trip. ``since``: the caller's first
    pending id; the committed entries from it on are chained (its own, and any committed
    meanwhile), or nothing when another chaining took them first; None: every pending entry (the
    background duty's, verify's). Whoever takes the head lock chains them all, so under load one
    chaining takes the entries of many requests. Returns how many (migration
    0003_audit_chain_async)."""
    dbapi_connection.autocommit = True
    try:
        row = dbapi_connection.execute(CHAIN_SQL, (since,)).fetchone()
    finally:
        dbapi_connection.autocommit = False
    return int(row[0]) if row else 0


# A write (the head row rewritten as it is) in a transaction that waits for its commit's flush
# (synchronous_commit on for this transaction, whatever the database's setting): it returns once
# the WAL up to it, every earlier commit's included, is on disk. (A transaction that writes no WAL
# commits without a flush, even with a transaction id.)
FLUSH_SQL = (
    "SELECT set_config('synchronous_commit', 'on', true)",
    "UPDATE audit_head SET last_hash = last_hash WHERE id = 1",
)


def chain_pending(engine: Any, *, durable: bool = False) -> int:
    """Chain whatever committed entries are still pending (PostgreSQL; 0 elsewhere): left by a
    process that died between a commit and its chaining, or whose chaining met a lost
    connection. The workers' background duty, ``cityid audit verify`` and erasure call it.

    ``durable``: then wait until every chaining so far is on disk. A chaining commits without
    waiting for its flush (migration 0003_audit_chain_async: a crash may take the last ones back,
    their entries then being chained again from ``audit_pending``); ``cityid audit verify`` reads
    the chain only after this, so the last hash it reports (an anchor kept outside the database)
    is one no crash can take back."""
    if engine.dialect.name != "postgresql":
        return 0
    raw = engine.raw_connection()
    try:
        raw.rollback()  # idle, whatever the pool handed out
        chained = chain_committed(raw.driver_connection)
        if durable:
            for statement in FLUSH_SQL:
                raw.driver_connection.execute(statement)
            raw.commit()  # PostgreSQL 15 docs 30.4: waits for the WAL flush up to this commit
        return chained
    finally:
        raw.close()


@event.listens_for(Session, "after_commit")
def _chain_after_commit(session: Session) -> None:
    # the session's connection is still its own here (released after this event), and idle.
    # SQLAlchemy sends this event for a released savepoint too (begin_nested): the transaction
    # is still open then, its entries are chained after its own commit.
    if session.in_nested_transaction():
        return
    pending = session.info.pop(_PENDING_KEY, None)
    if pending is None:
        return
    dbapi_connection, since = pending
    try:
        chain_committed(dbapi_connection, since)
    except Exception:  # the entries are committed: the next chaining (any worker's) takes them
        log.warning("audit entries committed, their chaining postponed", exc_info=True)


@event.listens_for(Session, "after_transaction_end")
def _forget_pending(session: Session, transaction: Any) -> None:
    # The outermost transaction ended without a commit (rolled back): nothing to chain, and never
    # a stale connection. A savepoint's end (begin_nested, e.g. the mail outbox) is not the
    # transaction's: its entries still commit with it and are chained after.
    if transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_seq: int | None
    problem: str
    # the last entry walked: kept outside the database, it is an anchor for later checks
    last_seq: int | None = None
    last_hash: str = ""
    # sequence numbers with no entry: earlier releases took them from a database sequence on
    # PostgreSQL, and a transaction that rolled back (a crash, a lost connection) left its number
    # unused. The hash chain links each entry to the one before it, so a gap holds no lost entry.
    gaps: int = 0
    first_gap: int | None = None
    # PostgreSQL: committed entries not yet on the chain (chain_pending puts them there)
    pending: int = 0


# What account erasure writes in place of an account id (idp.privacy.erase_account).
PSEUDONYM_PREFIX = "erased:"

_VERIFY_COLUMNS = (
    AuditEvent.seq,
    AuditEvent.at,
    AuditEvent.actor,
    AuditEvent.action,
    AuditEvent.outcome,
    AuditEvent.subject,
    AuditEvent.reason,
    AuditEvent.details,
    AuditEvent.salt,
    AuditEvent.party_commitment,
    AuditEvent.pseudonymised,
    AuditEvent.prev_hash,
    AuditEvent.hash,
)


def verify(session: Session, anchors: Mapping[int, str] | None = None) -> VerifyResult:
    """Walk the chain and recompute every hash. Rows are streamed (columns, not ORM objects):
    memory stays flat however long the log is.

    ``anchors`` maps an entry's seq to the hash an earlier run reported for it (``last_seq``,
    ``last_hash``), kept outside the database. The chain is not keyed: whoever can write to the
    database can rewrite it and recompute every hash, but not make an anchored entry keep its
    hash, so a rewrite of anything up to an anchor is found; except the parties of an entry
    marked pseudonymised, which an erasure replaces on purpose (only the pseudonym is checked)."""
    want = dict(anchors or {})
    prev = GENESIS
    count = 0
    last_seq: int | None = None
    gaps, first_gap = 0, None
    rows = session.execute(
        select(*_VERIFY_COLUMNS).order_by(AuditEvent.seq).execution_options(yield_per=5_000)
    )
    for ev in rows:
        count += 1
        if not hmac.compare_digest(ev.prev_hash, prev):
            return VerifyResult(False, count, ev.seq, "entry does not follow its predecessor")
        if ev.pseudonymised:
            # erasure replaced the account id by a pseudonym: one of the two must be one
            if not (ev.actor.startswith(PSEUDONYM_PREFIX) or ev.subject.startswith(PSEUDONYM_PREFIX)):
                return VerifyResult(False, count, ev.seq, "marked pseudonymised but names no pseudonym")
        elif not hmac.compare_digest(ev.party_commitment, _commitment(ev.salt, ev.actor, ev.subject)):
            return VerifyResult(False, count, ev.seq, "actor or subject changed")
        expected = _entry_hash(prev, ev.at, ev.action, ev.outcome, ev.reason, ev.details, ev.party_commitment)
        if not hmac.compare_digest(ev.hash, expected):
            return VerifyResult(False, count, ev.seq, "entry content changed")
        anchored = want.pop(ev.seq, None)
        if anchored is not None and not hmac.compare_digest(ev.hash, anchored):
            problem = "entry differs from its anchor: the chain was rewritten"
            return VerifyResult(False, count, ev.seq, problem)
        expected_seq = (last_seq or 0) + 1
        if ev.seq != expected_seq:  # numbers missing between two linked entries: no entry lost
            gaps += ev.seq - expected_seq
            first_gap = expected_seq if first_gap is None else first_gap
        prev, last_seq = ev.hash, ev.seq
    if want:
        problem = "an anchored entry is missing: the chain was cut or rewritten"
        return VerifyResult(False, count, min(want), problem)
    head = session.get(AuditHead, 1)
    if head is None and count:
        return VerifyResult(False, count, None, "the chain's head record is missing")
    if head is not None and not hmac.compare_digest(head.last_hash, prev):
        return VerifyResult(False, count, None, "entries missing at the end of the chain")
    pending = session.execute(select(func.count()).select_from(AuditPending)).scalar_one()
    return VerifyResult(True, count, None, "", last_seq, prev if count else "", gaps, first_gap, pending)


def entries(
    session: Session,
    *,
    party: str | None = None,
    action_prefix: str | None = None,
    outcome: str | None = None,
    since: dt.datetime | None = None,
    leave_out: Iterable[str] = (),
    limit: int | None = 100,
) -> list[AuditEvent]:
    """Entries newest first: where ``party`` is actor or subject, whose action starts with
    ``action_prefix``, with ``outcome``, at or after ``since``, other than the actions in
    ``leave_out`` (left out before the limit applies); ``limit`` None: all of them."""
    q = select(AuditEvent).order_by(AuditEvent.seq.desc())
    if party is not None:
        q = q.where(or_(AuditEvent.actor == party, AuditEvent.subject == party))
    if action_prefix:
        q = q.where(AuditEvent.action.startswith(action_prefix, autoescape=True))
    if outcome is not None:
        q = q.where(AuditEvent.outcome == outcome)
    if since is not None:
        q = q.where(AuditEvent.at >= since)
    left_out = list(leave_out)
    if left_out:
        q = q.where(AuditEvent.action.not_in(left_out))
    if limit is not None:
        q = q.limit(max(1, limit))
    return list(session.execute(q).scalars())


def pseudonymise(session: Session, party: str, pseudonym: str) -> int:
    """Replace a party's identifier in the log by a pseudonym; the chain stays verifiable."""
    if not pseudonym.startswith(PSEUDONYM_PREFIX):
        raise ValueError(f"a pseudonym starts with {PSEUDONYM_PREFIX!r}: verify tells them apart by it")
    if session.get_bind().dialect.name == "postgresql":
        # entries committed but not yet chained would keep the name: chained first, in this
        # transaction (the erasure holds the head until it commits)
        session.execute(select(func.cityid_audit_chain(None)))
    n = 0
    for ev in session.execute(
        select(AuditEvent).where((AuditEvent.actor == party) | (AuditEvent.subject == party))
    ).scalars():
        if ev.actor == party:
            ev.actor = pseudonym
        if ev.subject == party:
            ev.subject = pseudonym
        ev.pseudonymised = True
        n += 1
    return n
