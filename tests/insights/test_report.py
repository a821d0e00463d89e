"""The roll-ups change nothing: any range read from monthly, daily and hourly rows equals the sum
of the hourly counters, whatever the month and day boundaries (issue 15)."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from sqlalchemy import func, select

from db import make_engine, make_session_factory, transaction
from idp.insights import report, store
from idp.insights.models import FunnelCount, FunnelMonthly
from idp.insights.store import Key

START = dt.datetime(2026, 1, 20, tzinfo=dt.UTC)
DAYS = 100  # 2026-01-20 .. 2026-04-29


@pytest.fixture
def sessions(db_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    rnd = random.Random(7)
    with transaction(factory) as s:
        for d in range(DAYS):
            for h in (0, 9, 23):
                at = START + dt.timedelta(days=d, hours=h)
                store.add(
                    s,
                    {
                        Key(
                            at, f"svc{rnd.randint(1, 3)}", "code", "issued", "low", "low", "password"
                        ): rnd.randint(1, 9),
                        Key(at, "svc1", "request", "accepted", "low"): rnd.randint(1, 9),
                    },
                )
    yield factory
    engine.dispose()


def _truth(factory, since: dt.date, until: dt.date, service: str | None = None) -> dict[tuple[str, str], int]:  # type: ignore[no-untyped-def]
    lo = dt.datetime.combine(since, dt.time(), tzinfo=dt.UTC)
    hi = dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    q = select(FunnelCount.step, FunnelCount.outcome, func.sum(FunnelCount.count)).where(
        FunnelCount.hour >= lo, FunnelCount.hour < hi
    )
    if service:
        q = q.where(FunnelCount.service == service)
    with factory() as s:
        return {
            (a, b): int(n) for a, b, n in s.execute(q.group_by(FunnelCount.step, FunnelCount.outcome)).all()
        }


RANGES = [
    (dt.date(2026, 1, 25), dt.date(2026, 4, 10)),  # two whole months and two partial ones
    (dt.date(2026, 2, 1), dt.date(2026, 3, 31)),  # exactly two months
    (dt.date(2026, 2, 3), dt.date(2026, 2, 27)),  # inside one month
    (dt.date(2026, 1, 1), dt.date(2026, 5, 31)),  # wider than the data
    (dt.date(2026, 4, 20), dt.date(2026, 4, 29)),  # partly not rolled up yet
]


def test_ranges_over_monthly_daily_and_hourly_rows_equal_the_hourly_sums(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:  # roll up to 2026-04-25 only: the rest stays hourly
        while report.roll_up(s, dt.datetime(2026, 4, 25, 2, tzinfo=dt.UTC)):
            pass
    with sessions() as s:
        assert report.rolled_until(s) == dt.date(2026, 4, 25)
        months = s.execute(select(FunnelMonthly.month).distinct()).scalars().all()
        assert sorted(months) == [dt.date(2026, 1, 1), dt.date(2026, 2, 1), dt.date(2026, 3, 1)]
    for since, until in RANGES:
        for service in (None, "svc1"):
            rng = report.Range(since, until, service)
            with sessions() as s:
                got = {(a, b): n for a, b, n in report._cells(s, rng, ["step", "outcome"])}
                per_day = report._cells(s, rng, ["day"], [(report.STEP, "code"), (report.OUTCOME, "issued")])
            truth = _truth(sessions, since, until, service)
            assert got == truth, (since, until, service)
            assert sum(n for _d, n in per_day) == truth.get(("code", "issued"), 0)


def test_retention_purge_deletes_counters_older_than_the_configured_months(db_url: str) -> None:
    from idp.serve import purge_expired

    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    now = dt.datetime(2028, 6, 15, 12, tzinfo=dt.UTC)
    old, kept = now - dt.timedelta(days=26 * 30.5), now - dt.timedelta(days=24 * 30.5)
    with transaction(factory) as s:
        store.add(
            s,
            {
                Key(store.hour_of(old), "svc", "code", "issued"): 5,
                Key(store.hour_of(kept), "svc", "code", "issued"): 7,
            },
        )
    with transaction(factory) as s:
        purge_expired(s, now)  # the default: 25 months
    with factory() as s:
        assert s.execute(select(func.sum(FunnelCount.count))).scalar() == 7
    with transaction(factory) as s:
        purge_expired(s, now, insights_retention_months=12)
    with factory() as s:
        assert s.execute(select(func.count()).select_from(FunnelCount)).scalar() == 0
    engine.dispose()
