"""Writing the counters: one upsert per distinct key, ``count = count + n``.

``INSERT … ON CONFLICT (key) DO UPDATE SET count = count + excluded.count`` on SQLite (3.24+)
and PostgreSQL alike: concurrent workers and instances add to the same row without a lost
update, and no read precedes the write.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, NamedTuple

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from idp.insights.models import DIMENSIONS, FunnelCount, FunnelTotal


class Key(NamedTuple):
    """One counter cell (every field a short code, "" when not known)."""

    hour: dt.datetime
    service: str
    step: str
    outcome: str
    level_asked: str = ""
    level_reached: str = ""
    method: str = ""
    language: str = ""
    platform: str = ""


def hour_of(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(FunnelCount)
    if dialect == "sqlite":
        return sqlite.insert(FunnelCount)
    raise RuntimeError(f"insights counters need SQLite or PostgreSQL, not {dialect}")


def add(session: Session, counts: Mapping[Key, int]) -> None:
    """Add ``counts`` to the counters, in the caller's transaction."""
    if not counts:
        return
    stmt = _insert(session)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(DIMENSIONS),
        set_={"count": FunnelCount.count + stmt.excluded["count"]},
    )
    rows = [{**k._asdict(), "count": n} for k, n in counts.items() if n]
    if len(rows) == 1:
        session.execute(stmt.values(rows[0]))
    else:
        session.execute(stmt, rows)


def purge(session: Session, now: dt.datetime, retention_months: int) -> int:
    """Counters older than the retention period go (GDPR Art. 5(1)(e); default 25 months:
    two full years to compare a month with the same month a year before, plus the running one)."""
    cutoff = hour_of(now) - dt.timedelta(days=round(retention_months * 30.437))
    res = session.execute(delete(FunnelCount).where(FunnelCount.hour < cutoff))
    return int(getattr(res, "rowcount", 0) or 0)


def add_totals(session: Session, counts: Mapping[tuple[str, str, str, str], int]) -> None:
    """Add to the running totals (step, outcome, level_reached, method) -> n."""
    if not counts:
        return
    dialect = session.get_bind().dialect.name
    stmt: Any = postgresql.insert(FunnelTotal) if dialect == "postgresql" else sqlite.insert(FunnelTotal)
    stmt = stmt.on_conflict_do_update(
        index_elements=["step", "outcome", "level_reached", "method"],
        set_={"count": FunnelTotal.count + stmt.excluded["count"]},
    )
    session.execute(
        stmt,
        [
            {"step": s, "outcome": o, "level_reached": r, "method": m, "count": n}
            for (s, o, r, m), n in counts.items()
        ],
    )
