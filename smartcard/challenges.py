"""Single-use challenges: 256 random bits, only their SHA-256 stored, five minutes to live."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Protocol, cast

from sqlalchemy import Table, Update, bindparam, delete, select, update
from sqlalchemy.orm import Session

from smartcard.errors import InvalidChallenge, InvalidRequest
from smartcard.models import PENDING, USED, Challenge
from smartcard.sql import Db, connection

_TABLE = cast(Table, Challenge.__table__)
_T = _TABLE.c
# the columns a check needs, read with one Core statement (no ORM identity map on hot paths)
_LOOKUP = select(
    _T.id,
    _T.public_id,
    _T.purpose,
    _T.account_id,
    _T.device_id,
    _T.state,
    _T.expires_at,
    _T.binding_code,
    _T.service_name,
    _T.amount,
    _T.level,
).where(_T.id == bindparam("digest"))

# Binding codes: no 0/O, 1/I/L, so a citizen reads them off a screen without doubt.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
MAX_CHALLENGE_CHARS = 64


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str, what: str) -> bytes:
    if not isinstance(text, str) or len(text) > 100_000:
        raise InvalidRequest(f"{what} is not a base64url string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"{what} is not base64url") from exc


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def binding_code() -> str:
    """Six characters, shown as ``ABC-234``: about 30 bits, enough to compare two screens."""
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(6))
    return f"{code[:3]}-{code[3:]}"


@dataclass(frozen=True)
class IssuedChallenge:
    value: str  # base64url of 32 random bytes: what the device binds into its evidence/signature
    public_id: str
    purpose: str
    expires_at: dt.datetime


def create(
    session: Session,
    *,
    purpose: str,
    account_id: str,
    ttl: dt.timedelta,
    now: dt.datetime,
    device_id: str | None = None,
    keep_value: bool = False,
    **binding: str | int | None,
) -> tuple[IssuedChallenge, Challenge]:
    raw = secrets.token_bytes(32)
    row = Challenge(
        id=digest(raw),
        purpose=purpose,
        account_id=account_id,
        device_id=device_id,
        value=b64url(raw) if keep_value else None,
        created_at=now,
        expires_at=now + ttl,
        state=PENDING,
        **binding,
    )
    session.add(row)
    session.flush()
    return IssuedChallenge(b64url(raw), row.public_id, purpose, row.expires_at), row


@dataclass(frozen=True)
class ChallengeState:
    """A challenge as read for one check (a snapshot; :func:`advance` decides atomically)."""

    id: str
    public_id: str
    purpose: str
    account_id: str
    device_id: str | None
    state: str
    expires_at: dt.datetime
    binding_code: str | None
    service_name: str | None
    amount: str | None
    level: int | None


class _Live(Protocol):
    @property
    def purpose(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def expires_at(self) -> dt.datetime: ...


def _raw(value: str) -> bytes:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CHALLENGE_CHARS:
        raise InvalidChallenge("challenge missing or malformed")
    return b64url_decode(value, "challenge")


def find(session: Session, value: str) -> tuple[Challenge, bytes]:
    """The challenge row for a value the client sent back, and the raw challenge bytes."""
    raw = _raw(value)
    row = session.get(Challenge, digest(raw))  # looked up by digest: no timing oracle on the value
    if row is None:
        raise InvalidChallenge("unknown challenge")
    return row, raw


def lookup(db: Db, value: str) -> tuple[ChallengeState, bytes]:
    """As :func:`find`, one Core statement, a frozen snapshot instead of an ORM row."""
    raw = _raw(value)
    # looked up by digest: no timing oracle on the value
    found = connection(db).execute(_LOOKUP, {"digest": digest(raw)}).first()
    if found is None:
        raise InvalidChallenge("unknown challenge")
    return ChallengeState(*found), raw


def check_live(row: _Live, *, purpose: str, account_id: str, now: dt.datetime) -> None:
    if not hmac.compare_digest(row.purpose, purpose):
        raise InvalidChallenge(f"challenge is for {row.purpose}, not {purpose}")
    if not hmac.compare_digest(row.account_id, account_id):
        raise InvalidChallenge("challenge was issued to another account")
    if row.state != PENDING:
        raise InvalidChallenge("challenge already used")  # single use
    if row.expires_at <= now:
        raise InvalidChallenge("challenge expired")


@functools.lru_cache(maxsize=8)
def _advance_statement(extra: tuple[str, ...]) -> Update:
    """``UPDATE … WHERE id = ? AND state = 'pending'``, built once per set of extra columns."""
    columns = ("state", "answered_at", *extra)
    return (
        update(_TABLE)
        .where(_T.id == bindparam("b_id"), _T.state == PENDING)
        .values({c: bindparam(f"b_{c}") for c in columns})
    )


def advance(db: Db, challenge_id: str, *, to: str, now: dt.datetime, **values: object) -> None:
    """Move a pending challenge on, atomically: of two concurrent uses only one wins."""
    params = {"b_id": challenge_id, "b_state": to, "b_answered_at": now}
    params.update({f"b_{k}": v for k, v in values.items()})
    result = connection(db).execute(_advance_statement(tuple(sorted(values))), params)
    if result.rowcount != 1:
        raise InvalidChallenge("challenge already used")


@functools.lru_cache(maxsize=8)
def _answer_statement(extra: tuple[str, ...]) -> Update:
    return _advance_statement(extra).returning(*_LOOKUP.selected_columns)


def answer(db: Db, value: str, *, to: str, now: dt.datetime, **values: object) -> ChallengeState:
    """Move the pending challenge ``value`` names on in one statement, and return it as it was.

    The caller checks the returned row (purpose, account, expiry, binding data) and raises on a
    mismatch: its transaction is then rolled back, the challenge stays pending. Of two
    concurrent answers only one finds the challenge pending (single use).
    """
    raw = _raw(value)
    params = {"b_id": digest(raw), "b_state": to, "b_answered_at": now}
    params.update({f"b_{k}": v for k, v in values.items()})
    conn = connection(db)
    found = conn.execute(_answer_statement(tuple(sorted(values))), params).first()
    if found is None:
        lookup(conn, value)  # raises InvalidChallenge("unknown challenge") for an unknown one
        raise InvalidChallenge("challenge already answered")  # single use
    return dataclasses.replace(ChallengeState(*found), state=PENDING)


def mark(session: Session, row: Challenge, *, to: str, now: dt.datetime, **values: object) -> None:
    """:func:`advance` for an ORM row, which is then refreshed."""
    advance(session, row.id, to=to, now=now, **values)
    session.refresh(row)


def consume(session: Session, value: str, *, purpose: str, account_id: str, now: dt.datetime) -> bytes:
    """Use an enrolment or renewal challenge once; returns its raw bytes."""
    row, raw = lookup(session, value)
    check_live(row, purpose=purpose, account_id=account_id, now=now)
    advance(session, row.id, to=USED, now=now)
    return raw


def purge_expired(session: Session, now: dt.datetime) -> int:
    res = session.execute(delete(Challenge).where(Challenge.expires_at < now - dt.timedelta(days=1)))
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


def pending_auth(session: Session, account_id: str, now: dt.datetime) -> list[Challenge]:
    return list(
        session.execute(
            select(Challenge)
            .where(
                Challenge.account_id == account_id,
                Challenge.purpose == "auth",
                Challenge.state == PENDING,
                Challenge.expires_at > now,
            )
            .order_by(Challenge.created_at)
        ).scalars()
    )
