"""Throttling of password guessing (NIST SP 800-63B §5.2.2, OWASP Authentication Cheat Sheet).

Per e-mail address, across every process (the state is in the database):

- the first ``FREE_FAILURES`` consecutive failures cost nothing;
- each further failure blocks the address for ``BASE_DELAY`` doubled per failure, at most
  ``MAX_DELAY``; while blocked, the password is not even checked, so nothing can be guessed;
- after ``HARD_LIMIT`` consecutive failures the address stays blocked until the password is
  reset by e-mail link (SP 800-63B: no more than 100 consecutive failed attempts);
- a successful login or a password reset clears the count, and so does a day without failures
  (below the hard limit).

Keyed by the e-mail's blind index for known and unknown addresses alike: the answers do not
reveal whether an account exists. Each attempt is counted as a failure *before* the password is
checked (:func:`claim`, one atomic upsert in a transaction of its own, committed at once), and a
right password clears the count again. So concurrent guesses see each other: the attempt that
starts a hold refuses every later one at once, and no number of parallel requests gets more
guesses than the schedule allows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, case, delete, exists, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from idp.models import Account, LoginThrottle

FREE_FAILURES = 5
BASE_DELAY = dt.timedelta(seconds=30)
MAX_DELAY = dt.timedelta(minutes=15)
HARD_LIMIT = 100
QUIET_RESET = dt.timedelta(hours=24)  # failures a day apart are not one run of guesses
# "until the password is reset": far enough that no one waits it out
UNTIL_RESET = dt.timedelta(days=365 * 100)


@dataclass(frozen=True)
class Blocked:
    until: dt.datetime
    failures: int

    @property
    def until_reset(self) -> bool:
        return self.failures >= HARD_LIMIT


def delay_after(failures: int) -> dt.timedelta | None:
    """How long an address is blocked after this many consecutive failures (None: not at all)."""
    if failures < FREE_FAILURES:
        return None
    if failures >= HARD_LIMIT:
        return UNTIL_RESET
    doublings = min(failures - FREE_FAILURES, 16)  # 30 s x 2^16 is far past MAX_DELAY; no overflow
    return min(BASE_DELAY * (1 << doublings), MAX_DELAY)


@dataclass(frozen=True)
class Attempt:
    """An attempt let through: the ``number``-th consecutive failure if the password is wrong."""

    number: int

    @property
    def hold(self) -> dt.timedelta | None:
        """The hold this attempt started, should it fail."""
        return delay_after(self.number)


def claim(session: Session, email_index: str, now: dt.datetime) -> Attempt | Blocked:
    """Count an attempt as a failure before its password is checked, or refuse it while held.

    One atomic upsert: the count goes up only while the address is not held, so of concurrent
    attempts exactly those the schedule allows get through. Commit ``session`` before checking
    the password; :func:`clear` after a right one.
    """
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    table = cast(Table, LoginThrottle.__table__)
    new = insert(table).values(email_index=email_index, failures=1, last_failure_at=now, blocked_until=None)
    stmt = new.on_conflict_do_update(
        index_elements=[table.c.email_index],
        set_={
            "failures": case(
                # a run ends after a quiet day, except at the hard limit (that waits for a reset)
                (
                    (table.c.last_failure_at < now - QUIET_RESET) & (table.c.failures < HARD_LIMIT),
                    1,
                ),
                else_=table.c.failures + 1,
            ),
            "last_failure_at": now,
        },
        where=table.c.blocked_until.is_(None) | (table.c.blocked_until <= now),
    ).returning(table.c.failures)
    failures = session.execute(stmt).scalar_one_or_none()
    if failures is None:  # held: the password is not even checked
        row = session.get(LoginThrottle, email_index)
        assert row is not None and row.blocked_until is not None
        return Blocked(row.blocked_until, row.failures)
    attempt = Attempt(int(failures))
    if attempt.hold is not None:
        session.execute(
            update(table).where(table.c.email_index == email_index).values(blocked_until=now + attempt.hold)
        )
    return attempt


def clear(session: Session, email_index: str) -> None:
    """A successful login or a password reset ends the run of failures."""
    session.execute(delete(LoginThrottle).where(LoginThrottle.email_index == email_index))


def purge(session: Session, now: dt.datetime) -> None:
    """Forget runs that ended by a quiet day (rows for made-up addresses must not pile up); for
    an address without an account also a run at the hard limit: there is no password to guess,
    and the hold would otherwise meet whoever registers the address later."""
    table = cast(Table, LoginThrottle.__table__)
    no_account = ~exists().where(Account.email_index == table.c.email_index)
    session.execute(
        delete(table).where(
            table.c.last_failure_at < now - QUIET_RESET,
            (
                (table.c.failures < HARD_LIMIT)
                & ((table.c.blocked_until.is_(None)) | (table.c.blocked_until <= now))
            )
            | no_account,
        )
    )
