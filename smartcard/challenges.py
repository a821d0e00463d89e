"""Single-use challenges: 256 random bits, only their SHA-256 stored, five minutes to live."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from smartcard.errors import InvalidChallenge, InvalidRequest
from smartcard.models import PENDING, USED, Challenge

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


def find(session: Session, value: str) -> tuple[Challenge, bytes]:
    """The challenge row for a value the client sent back, and the raw challenge bytes."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CHALLENGE_CHARS:
        raise InvalidChallenge("challenge missing or malformed")
    raw = b64url_decode(value, "challenge")
    row = session.get(Challenge, digest(raw))  # looked up by digest: no timing oracle on the value
    if row is None:
        raise InvalidChallenge("unknown challenge")
    return row, raw


def check_live(row: Challenge, *, purpose: str, account_id: str, now: dt.datetime) -> None:
    if not hmac.compare_digest(row.purpose, purpose):
        raise InvalidChallenge(f"challenge is for {row.purpose}, not {purpose}")
    if not hmac.compare_digest(row.account_id, account_id):
        raise InvalidChallenge("challenge was issued to another account")
    if row.state != PENDING:
        raise InvalidChallenge("challenge already used")  # single use
    if row.expires_at <= now:
        raise InvalidChallenge("challenge expired")


def mark(session: Session, row: Challenge, *, to: str, now: dt.datetime, **values: object) -> None:
    """Move a pending challenge on, atomically: of two concurrent uses only one wins."""
    result = session.execute(
        update(Challenge)
        .where(Challenge.id == row.id, Challenge.state == PENDING)
        .values(state=to, answered_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidChallenge("challenge already used")
    session.refresh(row)


def consume(session: Session, value: str, *, purpose: str, account_id: str, now: dt.datetime) -> bytes:
    """Use an enrolment or renewal challenge once; returns its raw bytes."""
    row, raw = find(session, value)
    check_live(row, purpose=purpose, account_id=account_id, now=now)
    mark(session, row, to=USED, now=now)
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
