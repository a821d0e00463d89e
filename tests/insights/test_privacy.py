"""No personal data in the insights: the tables cannot hold who, and the export hides small counts."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import inspect

from db import make_engine, make_session_factory, transaction
from idp.insights import report, store
from idp.insights.store import Key

INSIGHTS_TABLES = (
    "insights_funnel_hourly",
    "insights_funnel_daily",
    "insights_funnel_monthly",
    "insights_funnel_total",
    "insights_rollup_state",
)
# Every column the insights tables may have: coarse codes and counts. A new column must be added
# here knowingly, after asking whether it could single out a person.
ALLOWED = {
    "hour",
    "day",
    "service",
    "step",
    "outcome",
    "level_asked",
    "level_reached",
    "method",
    "language",
    "platform",
    "count",
    "id",
    "rolled_until",
    "month",
}
IDENTIFYING = (
    "account",
    "session",
    "sid",
    "sub",
    "user",
    "email",
    "ip",
    "addr",
    "address",
    "agent",
    "device_id",
    "jti",
    "grant",
)


def test_insights_tables_have_no_column_identifying_an_account_session_address_or_ip(db_url: str) -> None:
    engine = make_engine(db_url)
    insp = inspect(engine)
    seen = set()
    for table in INSIGHTS_TABLES:
        cols = {c["name"] for c in insp.get_columns(table)}
        seen |= cols
        assert cols <= ALLOWED, f"{table}: unexpected columns {cols - ALLOWED}"
        for col in cols:
            parts = col.split("_")
            assert not any(word in parts or col == word for word in IDENTIFYING), f"{table}.{col}"
        assert not insp.get_foreign_keys(table), f"{table} links to another table"
    assert {"service", "step", "count"} <= seen
    engine.dispose()


@pytest.mark.parametrize("k", [10, 5])
def test_export_suppresses_small_counts_and_publishes_no_total_of_hidden_cells(db_url: str, k: int) -> None:
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    hour = store.hour_of(dt.datetime(2026, 3, 2, 10, tzinfo=dt.UTC))
    with transaction(sessions) as s:
        store.add(
            s,
            {
                Key(hour, "svc", "code", "issued", "low", "low", "password"): 25,
                Key(hour, "svc", "code", "issued", "substantial", "substantial", "device"): 3,  # small
                Key(hour, "svc", "request", "accepted", "low"): 40,
                Key(hour, "svc", "consent", "refused"): k - 1,  # just below k
                Key(hour, "svc", "consent", "given"): k,  # exactly k: published
            },
        )
    with sessions() as s:
        rows = {r.metric: r.value for r in report.export(s, report.Range(hour.date(), hour.date()), k)}
    engine.dispose()
    assert rows["logins_low_password"] == 25
    assert rows["logins_substantial_device"] == f"<{k}"
    assert rows["consent_refused"] == f"<{k}"
    assert rows["consent_given"] == k
    assert rows["request_accepted"] == 40
    # the only total is the sum of the published login cells: published total minus published
    # cells is 0, never the hidden 3
    assert rows["logins_published"] == 25
    assert "logins" not in rows and not any(
        m.startswith("logins_substantial") and v == 3 for m, v in rows.items()
    )
