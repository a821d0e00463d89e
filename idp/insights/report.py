"""Figures from the funnel counters: the dashboard's, the CLI's and the open-data export's.

Flask-free: functions over a SQLAlchemy session returning frozen dataclasses. Completed days are
read from the daily roll-up (:func:`roll_up`, run by the background duty), the days not yet
rolled up (today, normally) from the hourly rows; both are summed in the database.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Date, and_, func, insert, literal, select
from sqlalchemy.orm import Session

from idp.insights.models import FunnelCount, FunnelDaily, FunnelMonthly, FunnelTotal, RollupState

# The funnel as the dashboard shows it: (step, outcome, label) in order.
FUNNEL_STEPS: tuple[tuple[str, str], ...] = (
    ("request", "accepted"),
    ("login_page", "shown"),
    ("first_factor", "ok"),
    ("stepup", "asked"),
    ("stepup", "done"),
    ("consent", "shown"),
    ("consent", "given"),
    ("code", "issued"),
    ("code", "redeemed"),
)
LEVELS = ("low", "substantial", "high")
ROLLUP_DAYS_PER_RUN = 62  # one transaction stays short; a backlog is worked off tick by tick


@dataclass(frozen=True)
class Range:
    since: dt.date  # first day, inclusive (UTC)
    until: dt.date  # last day, inclusive (UTC)
    service: str | None = None  # a client_id, or every service

    def __post_init__(self) -> None:
        if self.until < self.since:
            raise ValueError("the range ends before it starts")


@dataclass(frozen=True)
class StepFigure:
    step: str
    outcome: str
    count: int  # authorizations that reached this step
    abandoned: int  # authorizations whose last step this was when they expired
    rate: float  # abandoned / count (0 when count is 0)


@dataclass(frozen=True)
class ServiceFunnel:
    service: str
    steps: tuple[StepFigure, ...]
    refused_consent: int
    failed_first_factor: int
    failed_stepup: int


@dataclass(frozen=True)
class Dashboard:
    range: Range
    logins_per_day: tuple[tuple[dt.date, int], ...]
    logins_per_service: tuple[tuple[str, int], ...]
    level_matrix: tuple[tuple[str, str, int], ...]  # (asked, reached, count)
    methods: tuple[tuple[str, int], ...]
    funnels: tuple[ServiceFunnel, ...]
    give_up: tuple[tuple[str, str, int], ...]  # top three (service, step, abandoned)
    devices_by_platform: tuple[tuple[str, int], ...] = field(default=())

    @property
    def logins(self) -> int:
        return sum(n for _, n in self.logins_per_day)


# --------------------------------------------------------------------------- roll-up


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _state(session: Session) -> RollupState:
    row = session.execute(select(RollupState).where(RollupState.id == 1).with_for_update()).scalar()
    if row is None:
        session.add(RollupState(id=1, rolled_until=None))
        session.flush()
        row = session.execute(select(RollupState).where(RollupState.id == 1).with_for_update()).scalar_one()
    return row


def rolled_until(session: Session) -> dt.date | None:
    return session.execute(select(RollupState.rolled_until).where(RollupState.id == 1)).scalar()


def roll_up(session: Session, now: dt.datetime, max_days: int = ROLLUP_DAYS_PER_RUN) -> int:
    """Sum completed days (ended more than an hour ago) of hourly rows into daily rows; returns
    the number of days rolled up. Idempotent per day; the state row is locked meanwhile."""
    state = _state(session)
    last = (now - dt.timedelta(hours=1)).astimezone(dt.UTC).date()  # this day is not complete
    start = state.rolled_until
    if start is None:
        first = session.execute(select(func.min(FunnelCount.hour))).scalar()
        if first is None:
            return 0
        start = first.astimezone(dt.UTC).date() if isinstance(first, dt.datetime) else first
    done = 0
    day = start
    cols = (
        FunnelCount.service,
        FunnelCount.step,
        FunnelCount.outcome,
        FunnelCount.level_asked,
        FunnelCount.level_reached,
        FunnelCount.method,
    )
    while day < last and done < max_days:
        session.query(FunnelDaily).filter(FunnelDaily.day == day).delete(synchronize_session=False)
        summed = (
            select(literal(day, Date()).label("day"), *cols, func.sum(FunnelCount.count))
            .where(
                FunnelCount.hour >= _day_start(day), FunnelCount.hour < _day_start(day + dt.timedelta(days=1))
            )
            .group_by(*cols)
        )
        session.execute(
            insert(FunnelDaily).from_select(
                ["day", "service", "step", "outcome", "level_asked", "level_reached", "method", "count"],
                summed,
            )
        )
        _add_totals(session, day)
        if (day + dt.timedelta(days=1)).day == 1:  # the month is complete: its monthly rows
            _roll_month(session, _month_floor(day), day + dt.timedelta(days=1))
        day += dt.timedelta(days=1)
        done += 1
    state.rolled_until = day
    return done


def _roll_month(session: Session, first: dt.date, end: dt.date) -> None:
    """Sum the daily rows of [first, end) into the monthly rows of ``first``."""
    d = FunnelDaily
    cols = (d.service, d.step, d.outcome, d.level_asked, d.level_reached, d.method)
    session.query(FunnelMonthly).filter(FunnelMonthly.month == first).delete(synchronize_session=False)
    summed = (
        select(literal(first, Date()).label("month"), *cols, func.sum(d.count))
        .where(d.day >= first, d.day < end)
        .group_by(*cols)
    )
    session.execute(
        insert(FunnelMonthly).from_select(
            ["month", "service", "step", "outcome", "level_asked", "level_reached", "method", "count"], summed
        )
    )


def _add_totals(session: Session, day: dt.date) -> None:
    """Add the day's daily rows to the running totals (the metrics' counters)."""
    from idp.insights.store import add_totals

    rows = session.execute(
        select(
            FunnelDaily.step,
            FunnelDaily.outcome,
            FunnelDaily.level_reached,
            FunnelDaily.method,
            func.sum(FunnelDaily.count),
        )
        .where(FunnelDaily.day == day)
        .group_by(FunnelDaily.step, FunnelDaily.outcome, FunnelDaily.level_reached, FunnelDaily.method)
    ).all()
    add_totals(session, {(r[0], r[1], r[2], r[3]): int(r[4]) for r in rows})


def totals(session: Session) -> dict[tuple[str, str, str, str], int]:
    """All-time (step, outcome, level_reached, method) counts: rolled-up totals plus the hourly
    rows not yet rolled up. For the Prometheus counters; monotonic across the retention purge."""
    out: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for step, outcome, reached, method, n in session.execute(
        select(
            FunnelTotal.step,
            FunnelTotal.outcome,
            FunnelTotal.level_reached,
            FunnelTotal.method,
            FunnelTotal.count,
        )
    ).all():
        out[(step, outcome, reached, method)] += int(n)
    since = rolled_until(session)
    h = FunnelCount
    q = select(h.step, h.outcome, h.level_reached, h.method, func.sum(h.count)).group_by(
        h.step, h.outcome, h.level_reached, h.method
    )
    if since is not None:
        q = q.where(h.hour >= _day_start(since))
    for step, outcome, reached, method, n in session.execute(q).all():
        out[(step, outcome, reached, method)] += int(n)
    return dict(out)


# --------------------------------------------------------------------------- reading


def _month_floor(d: dt.date) -> dt.date:
    return d.replace(day=1)


def _month_ceil(d: dt.date) -> dt.date:
    if d.day == 1:
        return d
    return (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def _part(
    table: Any, time_col: Any, lo: Any, hi: Any, rng: Range, group: Sequence[str], where: list[Any]
) -> Any:
    conds = [time_col >= lo, time_col < hi]
    if rng.service:
        conds.append(table.service == rng.service)
    conds += [getattr(table, c.key) == v for c, v in where]
    cols = [(time_col if g == "day" else getattr(table, g)).label(g) for g in group]
    return select(*cols, table.count.label("n")).where(and_(*conds))


def _cells(session: Session, rng: Range, group: Sequence[str], where: Iterable[Any] = ()) -> list[Any]:
    """Sum of counts over ``rng`` grouped by ``group`` (names of the daily dimensions; ``day``
    allowed): whole months from the monthly roll-up (when ``day`` is not asked for), other
    rolled-up days from the daily one, the rest from the hourly rows."""
    where = list(where)
    boundary = rolled_until(session) or rng.since
    daily_until = min(rng.until + dt.timedelta(days=1), max(boundary, rng.since))
    parts = []
    if daily_until > rng.since:
        months = (_month_ceil(rng.since), _month_floor(daily_until))
        if "day" not in group and months[0] < months[1]:
            m = FunnelMonthly
            parts.append(_part(m, m.month, months[0], months[1], rng, group, where))
            spans = [(rng.since, months[0]), (months[1], daily_until)]
        else:
            spans = [(rng.since, daily_until)]
        for lo, hi in spans:
            if lo < hi:
                parts.append(_part(FunnelDaily, FunnelDaily.day, lo, hi, rng, group, where))
    hourly_from = max(rng.since, daily_until)
    if hourly_from <= rng.until:
        h = FunnelCount
        parts.append(
            _part(
                h,
                h.hour,
                _day_start(hourly_from),
                _day_start(rng.until + dt.timedelta(days=1)),
                rng,
                group,
                where,
            )
        )
    # each part summed in the database, the (few) groups merged here: a date and a timestamp
    # column are not put into one UNION (PostgreSQL would shift the dates by the session's zone)
    merged: dict[tuple[Any, ...], int] = defaultdict(int)
    for part in parts:
        sub = part.subquery()
        gcols = [sub.c[g] for g in group]
        for row in session.execute(select(*gcols, func.sum(sub.c.n)).group_by(*gcols)).all():
            key = tuple(_as_day(v) if g == "day" else v for g, v in zip(group, row[:-1], strict=True))
            merged[key] += int(row[-1])
    return [(*k, n) for k, n in sorted(merged.items())]


def _as_day(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


class _Col:
    """A dimension and its value for ``_cells``' filters."""

    def __init__(self, key: str) -> None:
        self.key = key


STEP, OUTCOME = _Col("step"), _Col("outcome")


def dashboard(session: Session, rng: Range) -> Dashboard:
    issued = [(STEP, "code"), (OUTCOME, "issued")]
    per_day = _cells(session, rng, ["day"], issued)
    by_step = _cells(session, rng, ["service", "step", "outcome", "level_asked", "level_reached", "method"])
    per_service: dict[str, int] = defaultdict(int)
    matrix: dict[tuple[str, str], int] = defaultdict(int)
    methods: dict[str, int] = defaultdict(int)
    steps: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    for service, step, outcome, asked, reached, method, n in by_step:
        n = int(n)
        steps[service][(step, outcome)] += n
        if step == "code" and outcome == "issued":
            per_service[service] += n
            matrix[(asked or "-", reached or "-")] += n
            methods[method or "-"] += n
    funnels = tuple(_funnel(service, counts) for service, counts in sorted(steps.items()))
    give_up = sorted(
        ((f.service, s.step, s.abandoned) for f in funnels for s in f.steps if s.abandoned),
        key=lambda t: (-t[2], t[0], t[1]),
    )[:3]
    return Dashboard(
        range=rng,
        logins_per_day=tuple((d, int(n)) for d, n in per_day),
        logins_per_service=tuple(sorted(per_service.items(), key=lambda t: (-t[1], t[0]))),
        level_matrix=tuple((a, r, n) for (a, r), n in sorted(matrix.items())),
        methods=tuple(sorted(methods.items(), key=lambda t: (-t[1], t[0]))),
        funnels=funnels,
        give_up=tuple(give_up),
        devices_by_platform=devices_by_platform(session),
    )


def _funnel(service: str, counts: dict[tuple[str, str], int]) -> ServiceFunnel:
    abandoned_at = {step: n for (step, outcome), n in counts.items() if outcome == "abandoned"}
    figures = []
    seen_steps: set[str] = set()
    for step, outcome in FUNNEL_STEPS:
        n = counts.get((step, outcome), 0)
        # a flow that stopped is counted at its last step: shown at the step's first row (the
        # rate: of those who reached the step, how many gave up there)
        gone = abandoned_at.get(step, 0) if step not in seen_steps else 0
        seen_steps.add(step)
        figures.append(StepFigure(step, outcome, n, gone, round(gone / n, 4) if n else 0.0))
    return ServiceFunnel(
        service=service,
        steps=tuple(figures),
        refused_consent=counts.get(("consent", "refused"), 0),
        failed_first_factor=counts.get(("first_factor", "failed"), 0),
        failed_stepup=counts.get(("stepup", "failed"), 0),
    )


def devices_by_platform(session: Session) -> tuple[tuple[str, int], ...]:
    """Enrolled, unrevoked virtual smartcards by platform, and security keys (WebAuthn)."""
    out: dict[str, int] = {}
    try:
        from idp.insights.funnel import platform_of
        from smartcard.models import Device

        rows = session.execute(
            select(Device.type, func.count()).where(Device.revoked_at.is_(None)).group_by(Device.type)
        ).all()
        for kind, n in rows:
            out[platform_of(kind)] = out.get(platform_of(kind), 0) + int(n)
        from idp.webauthn_models import WebAuthnCredential

        keys = session.execute(select(func.count()).select_from(WebAuthnCredential)).scalar() or 0
        if keys:
            out["security key"] = int(keys)
    except ImportError:  # a build without these packages
        pass
    return tuple(sorted(out.items()))


# --------------------------------------------------------------------------- open data


@dataclass(frozen=True)
class ExportRow:
    day: dt.date
    service: str
    metric: str
    value: int | str  # a count, or "<k" (suppressed)


def _metric(step: str, outcome: str, reached: str, method: str) -> str | None:
    """The export's metric name of a counter cell; None: not published (see docs/insights.md)."""
    if outcome == "abandoned":
        return f"abandoned_{step}"
    if step == "code" and outcome == "issued":
        return f"logins_{reached or 'unknown'}_{method or 'unknown'}"
    if step == "stepup":
        return f"stepup_{outcome}_{method or 'unknown'}"
    if step == "token":
        return f"tokens_{outcome}"
    return f"{step}_{outcome}"


def export(session: Session, rng: Range, k: int = 10) -> list[ExportRow]:
    """One row per day, service and metric. Every metric is a cell of one partition of the
    authorizations (no two breakdowns of the same count, no totals): a suppressed cell is never
    the difference of published ones. ``logins_published`` is the sum of the row's published
    ``logins_*`` cells only (suppressed ones left out), so it reveals nothing either."""
    cells = _cells(session, rng, ["day", "service", "step", "outcome", "level_reached", "method"])
    sums: dict[tuple[dt.date, str, str], int] = defaultdict(int)
    for day, service, step, outcome, reached, method, n in cells:
        name = _metric(step, outcome, reached, method)
        if name is not None:
            sums[(day, service, name)] += int(n)
    rows: list[ExportRow] = []
    published: dict[tuple[dt.date, str], int] = defaultdict(int)
    for (day, service, name), n in sorted(sums.items()):
        if n <= 0:
            continue
        if n < k:  # small-count suppression
            rows.append(ExportRow(day, service, name, f"<{k}"))
            continue
        rows.append(ExportRow(day, service, name, n))
        if name.startswith("logins_"):
            published[(day, service)] += n
    for (day, service), n in published.items():
        rows.append(ExportRow(day, service, "logins_published", n))
    rows.sort(key=lambda r: (r.day, r.service, r.metric))
    return rows


EXPORT_FIELDS = ("date", "service", "metric", "value")


def export_records(rows: Iterable[ExportRow]) -> list[dict[str, Any]]:
    return [
        {"date": r.day.isoformat(), "service": r.service, "metric": r.metric, "value": r.value} for r in rows
    ]


def export_csv(rows: Iterable[ExportRow]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EXPORT_FIELDS)
    for r in rows:
        w.writerow([r.day.isoformat(), r.service, r.metric, r.value])
    return buf.getvalue()


def export_json(rows: Iterable[ExportRow], rng: Range, k: int) -> str:
    import json

    return json.dumps(
        {
            "schema": "cityid-insights-export/1",
            "since": rng.since.isoformat(),
            "until": rng.until.isoformat(),
            "suppression_threshold": k,
            "rows": export_records(rows),
        },
        ensure_ascii=False,
        indent=1,
    )
