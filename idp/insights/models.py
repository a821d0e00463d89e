"""The one insights table: hourly counters of login funnel steps per service.

Deliberately without any column that could identify a person: no account id, no session id,
no address, no IP, no user agent (GDPR Art. 5(1)(c) data minimisation, Art. 25 by design). A row
says "in this hour, for this service, this many authorizations passed this step with these
coarse properties". ``tests/insights/test_privacy.py`` holds the column list to that rule.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from db import Base

# Every dimension is a short code from a closed list (see idp.insights.funnel), "" when unknown.
DIMENSIONS = (
    "hour",
    "service",
    "step",
    "outcome",
    "level_asked",
    "level_reached",
    "method",
    "language",
    "platform",
)


class FunnelCount(Base):
    __tablename__ = "insights_funnel_hourly"

    hour: Mapped[dt.datetime] = mapped_column(primary_key=True)  # UTC, truncated to the hour
    service: Mapped[str] = mapped_column(String(64), primary_key=True)  # the client_id
    step: Mapped[str] = mapped_column(String(20), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(20), primary_key=True)
    level_asked: Mapped[str] = mapped_column(String(12), primary_key=True)
    level_reached: Mapped[str] = mapped_column(String(12), primary_key=True)
    method: Mapped[str] = mapped_column(String(20), primary_key=True)
    language: Mapped[str] = mapped_column(String(8), primary_key=True)
    platform: Mapped[str] = mapped_column(String(20), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)

    # SQLite: the rows live in the primary key's b-tree (no second tree to update on each
    # increment, range scans read the counts in place)
    __table_args__ = (
        Index("ix_insights_funnel_service_hour", "service", "hour"),
        {"sqlite_with_rowid": False},
    )


# The dashboard's and the export's dimensions: the daily roll-up keeps these (language and
# platform stay in the hourly rows only).
DAILY_DIMENSIONS = ("day", "service", "step", "outcome", "level_asked", "level_reached", "method")


class FunnelDaily(Base):
    """Completed days of :class:`FunnelCount`, summed (``report.roll_up``): 25 months of a
    hundred services are then about 760 rows per service and combination, not 18,000."""

    __tablename__ = "insights_funnel_daily"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    service: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[str] = mapped_column(String(20), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(20), primary_key=True)
    level_asked: Mapped[str] = mapped_column(String(12), primary_key=True)
    level_reached: Mapped[str] = mapped_column(String(12), primary_key=True)
    method: Mapped[str] = mapped_column(String(20), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index("ix_insights_daily_service_day", "service", "day"),
        # logins per day: covering (read from the index alone)
        Index("ix_insights_daily_step_day", "step", "outcome", "day", "service", "count"),
        {"sqlite_with_rowid": False},
    )


class FunnelMonthly(Base):
    """Completed months of :class:`FunnelDaily`, summed: 25 months of a service are 25 rows per
    combination, so that the dashboard answers for two years as fast as for a month."""

    __tablename__ = "insights_funnel_monthly"

    month: Mapped[dt.date] = mapped_column(Date, primary_key=True)  # its first day
    service: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[str] = mapped_column(String(20), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(20), primary_key=True)
    level_asked: Mapped[str] = mapped_column(String(12), primary_key=True)
    level_reached: Mapped[str] = mapped_column(String(12), primary_key=True)
    method: Mapped[str] = mapped_column(String(20), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index("ix_insights_monthly_service_month", "service", "month"),
        {"sqlite_with_rowid": False},
    )


class RollupState(Base):
    """One row: the first day not yet rolled up (days before it are in FunnelDaily). Locked
    while rolling up, so that workers and instances take turns."""

    __tablename__ = "insights_rollup_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rolled_until: Mapped[dt.date | None] = mapped_column(Date, nullable=True)


class FunnelTotal(Base):
    """Running totals of the rolled-up days (never lowered by the retention purge): the
    Prometheus counters read these plus the hours not yet rolled up, a few hundred rows."""

    __tablename__ = "insights_funnel_total"

    step: Mapped[str] = mapped_column(String(20), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(20), primary_key=True)
    level_reached: Mapped[str] = mapped_column(String(12), primary_key=True)
    method: Mapped[str] = mapped_column(String(20), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
