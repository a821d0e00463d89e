"""What counting costs, and how fast the dashboard answers (issue 15). Prints JSON.

1. Token rate (client credentials, wrk, server pinned to one core) with the funnel counters on
   and off, in alternating rounds (the machine is shared: the median of each side is compared).
2. Full login rate (authorize, login page, password, code, token: bench/login.py's flow) with
   the funnel on and off, alternating likewise.
3. The dashboard's figures for 25 months of hourly counters of 100 services (generated here into
   a fresh database, then rolled up as the background duty does): the default view (30 days,
   all services), one service over 25 months, and all services over 25 months.

Usage: .venv/bin/python bench/insights.py [--seconds 5] [--rounds 3] [--logins 120]
       [--months 25] [--services 100] [--postgres URL] [--skip-rates] [--skip-dashboard]
"""

from __future__ import annotations

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
sys.path.insert(0, os.path.dirname(_here))

import argparse
import base64
import datetime as dt
import json
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench._server import cli, machine_client, served, wrk

TOKEN_LUA = """
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&scope=permits:read"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic %s"
"""
PASSWORD = "correct horse battery staple"
REDIRECT = "http://127.0.0.1:9/cb"


@contextmanager
def funnel(on: bool) -> Any:
    """The served instance reads CITYID_INSIGHTS_FUNNEL (every setting has its variable)."""
    old = os.environ.get("CITYID_INSIGHTS_FUNNEL")
    os.environ["CITYID_INSIGHTS_FUNNEL"] = "true" if on else "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CITYID_INSIGHTS_FUNNEL", None)
        else:
            os.environ["CITYID_INSIGHTS_FUNNEL"] = old


def token_rate(on: bool, seconds: int, postgres: str | None) -> float:
    with funnel(on), served(postgres) as (data, url):
        cid, secret = machine_client(data, "permits:read")
        basic = base64.b64encode(f"{cid}:{secret}".encode()).decode()
        wrk(f"{url}/token", TOKEN_LUA % basic, seconds=1, connections=32)  # warm up
        r = wrk(f"{url}/token", TOKEN_LUA % basic, seconds=seconds, connections=32)
        assert r["errors"] == 0 and r["non2xx"] == 0, r
        return float(r["per_s"])


def login_rate(on: bool, logins: int, postgres: str | None) -> float:
    from bench.login import _consent, one_login

    with funnel(on), served(postgres) as (data, url):
        c = json.loads(cli(data, "client", "add", "--name", "bench", "--redirect-uri", REDIRECT, "--json"))
        users = []
        for i in range(8):
            email = f"citizen{i}@bench.example"
            cli(
                data,
                "user",
                "add",
                "--email",
                email,
                "--verified",
                env={"CITYID_NEW_USER_PASSWORD": PASSWORD},
            )
            users.append(email)
            _consent(url, c["client_id"], email)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: one_login(url, c["client_id"], c["client_secret"], users[i % len(users)]),
                    range(logins),
                )
            )
        return round(logins / (time.perf_counter() - t0), 2)


def hook_cost_us(n: int = 50_000) -> dict[str, float]:
    """CPU time of the token endpoint's counting, in process (the rates above are as noisy as the
    shared machine): one ``token_issued`` and the hand-over to the buffer at the request's end,
    against one buffered flush per 2 s."""
    import secrets as _secrets

    from flask import Flask, g

    from idp.config import Config
    from idp.insights import funnel
    from idp.runtime import Runtime

    app = Flask("bench")
    cfg = Config(secret_key=_secrets.token_urlsafe(32), key_passphrase=_secrets.token_urlsafe(32))
    app.extensions["cityid"] = Runtime(
        config=cfg,
        engine=None,
        sessions=None,
        keys=None,
        key_cache=None,
        courier=None,  # type: ignore[arg-type]
    )
    with app.app_context():
        t = time.process_time()
        for _ in range(n):
            funnel.token_issued(service="bench-client", grant_type="client_credentials")
            funnel.hand_over()
            g.pop("_insights_counts", None)
        per_call = (time.process_time() - t) / n * 1e6
    return {"token_hook_cpu_us": round(per_call, 2)}


def _alternate(fn: Any, rounds: int) -> dict[str, Any]:
    on: list[float] = []
    off: list[float] = []
    for i in range(rounds):
        for flag in (True, False) if i % 2 == 0 else (False, True):
            (on if flag else off).append(fn(flag))
    m_on, m_off = statistics.median(on), statistics.median(off)
    return {
        "funnel_on_per_s": on,
        "funnel_off_per_s": off,
        "median_on": m_on,
        "median_off": m_off,
        "cost_percent": round((m_off - m_on) / m_off * 100, 2),
    }


# --------------------------------------------------------------------------- dashboard


# (step, outcome, level asked, level reached, method, base count, every n-th hour)
CELLS = (
    ("request", "accepted", "low", "", "", 30, 1),
    ("login_page", "shown", "low", "", "", 29, 1),
    ("first_factor", "ok", "low", "low", "password", 28, 1),
    ("first_factor", "failed", "low", "", "password", 2, 1),
    ("consent", "given", "low", "", "password", 1, 1),
    ("code", "issued", "low", "low", "password", 27, 1),
    ("code", "redeemed", "", "", "", 27, 1),
    ("login_page", "abandoned", "low", "", "", 1, 1),
    ("stepup", "asked", "substantial", "low", "device", 4, 4),
    ("stepup", "done", "substantial", "substantial", "device", 3, 4),
    ("code", "issued", "substantial", "substantial", "device", 3, 4),
    ("stepup", "abandoned", "substantial", "low", "device", 1, 4),
)


def _generate(engine: Any, months: int, services: int) -> int:
    """Hourly counters for ``months`` × 30.44 days × 24 hours × ``services`` (about nine cells an
    hour each), generated by the database itself (INSERT … SELECT over a series)."""
    from sqlalchemy import text

    end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    hours = int(months * 30.44 * 24)
    start = end - dt.timedelta(hours=hours)
    cells = " UNION ALL ".join(
        f"SELECT '{a}' AS step, '{b}' AS outcome, '{c}' AS asked, '{d}' AS reached, '{e}' AS method, "
        f"{n} AS base, {k} AS every"
        for a, b, c, d, e, n, k in CELLS
    )
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            sql = f"""
            WITH RECURSIVE h(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM h WHERE i < {hours - 1}),
                 s(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM s WHERE j < {services - 1}),
                 c AS ({cells})
            INSERT INTO insights_funnel_hourly
            SELECT strftime('%Y-%m-%d %H:%M:%S.000000', :start, '+' || i || ' hours'),
                   printf('service-%03d', j), step, outcome, asked, reached, method, 'de',
                   CASE method WHEN 'device' THEN 'android' ELSE '' END,
                   base + abs(random() % 10)
            FROM h, s, c WHERE i % every = 0"""
            conn.execute(text(sql), {"start": start.strftime("%Y-%m-%d %H:%M:%S")})
        else:
            sql = f"""
            WITH c AS ({cells})
            INSERT INTO insights_funnel_hourly
            SELECT CAST(:start AS timestamptz) + make_interval(hours => i),
                   'service-' || lpad(j::text, 3, '0'), step, outcome, asked, reached, method, 'de',
                   CASE method WHEN 'device' THEN 'android' ELSE '' END,
                   base + floor(random() * 10)::int
            FROM generate_series(0, {hours - 1}) AS i, generate_series(0, {services - 1}) AS j, c
            WHERE i % every = 0"""
            conn.execute(text(sql), {"start": start.isoformat()})
        total = conn.execute(text("SELECT count(*) FROM insights_funnel_hourly")).scalar()
    return int(total or 0)


def _page_renderer(url: str, tmp: Path) -> Any:
    """The /insights view itself (figures, SVG charts, template) for a staff session: the access
    check (role, level) is a few primary-key reads and is left out here."""
    import secrets as _secrets

    from idp import uow
    from idp.app import create_app
    from idp.config import Config
    from idp.insights import views

    cfg = Config(
        data_dir=tmp,
        database_url=url,
        secret_key=_secrets.token_urlsafe(32),
        key_passphrase=_secrets.token_urlsafe(32),
    )
    app = create_app(cfg, check_schema=False)
    views._guard = lambda: None  # type: ignore[assignment]
    views.browser.current_account = lambda: type("Staff", (), {"id": "bench"})()  # type: ignore[assignment]

    def render(rng: Any) -> tuple[float, float]:
        q = f"/insights?since={rng.since}&until={rng.until}" + (
            f"&service={rng.service}" if rng.service else ""
        )
        with app.test_request_context(q):
            t, c = time.perf_counter(), time.process_time()
            html = views.dashboard()
            took = ((time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000)
            assert "<table" in html
            uow.abandon()
        return took

    return render


def dashboard_latency(months: int, services: int, postgres: str | None, repeat: int = 5) -> dict[str, Any]:
    from db import make_engine, make_session_factory, transaction
    from db.migrate import upgrade
    from idp.insights import report

    tmp = Path(tempfile.mkdtemp(prefix="cityid-insights-bench-"))
    drop = None
    if postgres:
        from bench._server import _fresh_database

        url, drop = _fresh_database(postgres)
    else:
        url = f"sqlite:///{tmp / 'insights.sqlite3'}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        sessions = make_session_factory(engine)
        t0 = time.perf_counter()
        rows = _generate(engine, months, services)
        generated_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        days = 0
        while True:
            with transaction(sessions) as s:
                n = report.roll_up(s, dt.datetime.now(dt.UTC), max_days=200)
            days += n
            if n == 0:
                break
        rollup_s = time.perf_counter() - t0
        today = dt.datetime.now(dt.UTC).date()
        first = today - dt.timedelta(days=int(months * 30.44))
        views = {
            "default_30_days_all_services": report.Range(today - dt.timedelta(days=29), today),
            f"{months}_months_one_service": report.Range(first, today, "service-042"),
            f"{months}_months_all_services": report.Range(first, today),
        }
        out: dict[str, Any] = {}
        page = _page_renderer(url, tmp)
        for name, rng in views.items():
            times, cpu = [], []
            for _ in range(repeat):
                with sessions() as s:
                    t, c = time.perf_counter(), time.process_time()
                    board = report.dashboard(s, rng)
                    times.append((time.perf_counter() - t) * 1000)
                    cpu.append((time.process_time() - c) * 1000)
            pages = [page(rng) for _ in range(repeat)]
            out[name] = {
                "figures_median_ms": round(statistics.median(times), 1),
                "figures_cpu_median_ms": round(statistics.median(cpu), 1),
                "page_median_ms": round(statistics.median(p[0] for p in pages), 1),
                "page_max_ms": round(max(p[0] for p in pages), 1),
                "page_cpu_median_ms": round(statistics.median(p[1] for p in pages), 1),
                "logins": board.logins,
            }
        return {
            "database": "postgresql" if postgres else "sqlite",
            "months": months,
            "services": services,
            "hourly_rows": rows,
            "generate_s": round(generated_s, 1),
            "rollup_days": days,
            "rollup_s": round(rollup_s, 1),
            "views": out,
            "target_ms": 300,
            "note": "wall time on a machine shared with other jobs; cpu: this process's CPU time",
        }
    finally:
        engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
        if drop is not None:
            drop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--logins", type=int, default=120)
    ap.add_argument("--months", type=int, default=25)
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--postgres")
    ap.add_argument("--skip-rates", action="store_true")
    ap.add_argument("--skip-dashboard", action="store_true")
    a = ap.parse_args()
    result: dict[str, Any] = {"bench": "insights", "database": "postgresql" if a.postgres else "sqlite"}
    if not a.skip_rates:
        if not shutil.which("wrk"):
            sys.exit("bench/insights.py needs wrk: apt-get install wrk")
        result["token"] = _alternate(lambda on: token_rate(on, a.seconds, a.postgres), a.rounds)
        result["login"] = _alternate(lambda on: login_rate(on, a.logins, a.postgres), a.rounds)
        result["hook"] = hook_cost_us()
        result["target_cost_percent"] = 3
    if not a.skip_dashboard:
        result["dashboard"] = dashboard_latency(a.months, a.services, a.postgres)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
