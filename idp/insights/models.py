"""The one insights table: hourly counters of login funnel steps per service.

Deliberately without any column that could identify a person: no account id, no session id,
no address, no IP, no user agent (GDPR Art. 5(1)(c) data minimisation, Art. 25 by design). A row
says "in this hour, for this service, this many authorizations passed this step with these
coarse properties". ``tests/insights/test_privacy.py`` holds the column list to that rule.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, Integer, String
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

    __table_args__ = (Index("ix_insights_funnel_service_hour", "service", "hour"),)
