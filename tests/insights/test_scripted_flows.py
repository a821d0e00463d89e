"""A scripted set of login flows over two instances on one database produces exactly those
counts in the dashboard's figures, the CLI, the open-data export and /metrics (issue 15)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import requests
from click.testing import CliRunner
from sqlalchemy import update

from db import transaction, utcnow
from idp.insights import funnel, report
from idp.models import LoginSession
from idp.serve import purge_expired
from tests.idp.conftest import Browser
from tests.insights.conftest import (
    METRICS_TOKEN,
    PASSWORD,
    Pair,
    login_page,
    rp_at,
    write_toml,
    wrong_password,
)

N_LOW = 3  # successful low logins (one with a wrong password first)
M_EID = 2  # step-ups to high abandoned at the eID step
K_REFUSED = 2  # consents refused


def _script(pair: Pair) -> None:
    """The flows, alternating between the two instances."""
    i = 0
    for n in range(N_LOW):
        idp = pair.instance(i)
        i += 1
        rp = rp_at(pair.rp, idp)
        email = f"low{n}@example.org"
        pair.a.add_user(email)
        browser = Browser(idp)
        url, verifier, _state = rp.authorize_url(scope="openid email")
        page = login_page(browser, url)
        if n == 0:  # a retry: the wrong password first, twice; counts once
            wrong_password(browser, page, email)
            wrong_password(browser, page, email)
            page = login_page(browser, url)
        page = browser.login(email, PASSWORD, page)
        page = browser.consent(page)
        assert page.status_code == 302 and "code=" in page.headers["Location"], page.text[:300]
        rp.redeem(page.headers["Location"], verifier)
    for n in range(M_EID):
        idp = pair.instance(i)
        i += 1
        email = f"eid{n}@example.org"
        pair.a.add_user(email)
        browser = Browser(idp)
        url, _verifier, _state = rp_at(pair.rp, idp).authorize_url(
            scope="openid", acr_values="http://eidas.europa.eu/LoA/high"
        )
        page = browser.login(email, PASSWORD, login_page(browser, url))
        assert page.status_code == 200 and "/login/eid" in page.url, page.url  # ...and the citizen leaves
    for n in range(K_REFUSED):
        idp = pair.instance(i)
        i += 1
        email = f"refuse{n}@example.org"
        pair.a.add_user(email)
        browser = Browser(idp)
        url, _verifier, _state = rp_at(pair.rp, idp).authorize_url(scope="openid email")
        page = browser.login(email, PASSWORD, login_page(browser, url))
        page = browser.consent(page, decision="deny")
        assert page.status_code == 302 and "error=access_denied" in page.headers["Location"]


def _expire_sessions(pair: Pair) -> None:
    """Time passes: every browser session expires; the background purge runs (on one worker)."""
    past = utcnow() - dt.timedelta(minutes=1)
    with transaction(pair.a.sessions()) as s:
        s.execute(update(LoginSession).values(expires_at=past))
    with transaction(pair.b.sessions()) as s:
        purge_expired(s, utcnow())
    funnel.flush(pair.a.app)  # the background duty's tick on each instance
    funnel.flush(pair.b.app)


EXPECTED_STEPS = {
    ("request", "accepted"): N_LOW + M_EID + K_REFUSED,
    ("login_page", "shown"): N_LOW + M_EID + K_REFUSED,
    ("first_factor", "ok"): N_LOW + M_EID + K_REFUSED,
    ("stepup", "asked"): M_EID,
    ("stepup", "done"): 0,
    ("consent", "shown"): N_LOW + K_REFUSED,
    ("consent", "given"): N_LOW,
    ("code", "issued"): N_LOW,
    ("code", "redeemed"): N_LOW,
}


def test_scripted_flows_give_exact_counts_everywhere_on_two_instances(pair: Pair, tmp_path: Path) -> None:
    _script(pair)
    _expire_sessions(pair)
    cid = pair.rp.client_id
    today = utcnow().date()
    rng = report.Range(today - dt.timedelta(days=1), today)

    # the dashboard's figures (what /insights renders)
    with pair.a.sessions()() as s:
        board = report.dashboard(s, rng)
    assert board.logins == N_LOW
    assert dict(board.logins_per_service) == {cid: N_LOW}
    assert dict(board.methods) == {"password": N_LOW}
    assert {(a, r): n for a, r, n in board.level_matrix} == {("low", "low"): N_LOW}
    assert [f.service for f in board.funnels] == [cid]
    (funnel,) = board.funnels
    got = {(st.step, st.outcome): st.count for st in funnel.steps}
    assert got == EXPECTED_STEPS
    assert funnel.failed_first_factor == 1  # once per authorization, whatever the retries
    assert funnel.refused_consent == K_REFUSED
    stepup_asked = next(st for st in funnel.steps if (st.step, st.outcome) == ("stepup", "asked"))
    assert stepup_asked.abandoned == M_EID  # counted at the step-up, once the sessions expired
    assert stepup_asked.rate == 1.0
    assert sum(st.abandoned for st in funnel.steps) == M_EID  # refused consents ended: not abandoned
    assert board.give_up == ((cid, "stepup", M_EID),)

    # the CLI
    data_dir = write_toml(pair.a, tmp_path / "cli")
    res = CliRunner().invoke(
        __import__("cli").main,
        ["insights", "show", "--data-dir", str(data_dir), "--json", "--since", str(rng.since)],
    )
    assert res.exit_code == 0, res.output
    shown = json.loads(res.output)
    assert shown["logins"] == N_LOW
    steps = {(st["step"], st["outcome"]): st["count"] for st in shown["funnels"][0]["steps"]}
    assert steps == EXPECTED_STEPS
    assert shown["give_up_top3"] == [{"service": cid, "step": "stepup", "abandoned": M_EID}]

    # the export: every count here is below 10, so every cell is suppressed
    res = CliRunner().invoke(
        __import__("cli").main,
        [
            "insights",
            "export",
            "--data-dir",
            str(data_dir),
            "--since",
            str(rng.since),
            "--until",
            str(today),
            "--format",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["rows"]
    metrics = {r["metric"]: r["value"] for r in rows}
    assert metrics["logins_low_password"] == "<10"
    assert metrics["request_accepted"] == "<10"
    assert metrics["abandoned_stepup"] == "<10"
    assert "logins_published" not in metrics  # nothing published: no sum of hidden cells
    assert all(r["value"] == "<10" for r in rows)

    # ...and with k = 1 (nothing suppressed) the same counts appear exactly
    with pair.a.sessions()() as s:
        exact = {r.metric: r.value for r in report.export(s, rng, k=1)}
    assert exact["request_accepted"] == N_LOW + M_EID + K_REFUSED
    assert exact["logins_low_password"] == N_LOW
    assert exact["stepup_asked_eid"] == M_EID
    assert exact["abandoned_stepup"] == M_EID
    assert exact["consent_refused"] == K_REFUSED
    assert exact["first_factor_failed"] == 1
    assert exact["code_redeemed"] == N_LOW

    # /metrics (the bearer token), from either instance: one truth in the database
    for idp in (pair.a, pair.b):
        text = requests.get(
            f"{idp.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
        ).text
        assert f'cityid_logins_total{{level="low",method="password"}} {float(N_LOW)}' in text
        assert f'cityid_tokens_issued_total{{grant="authorization_code"}} {float(N_LOW)}' in text
        assert f'cityid_stepups_total{{method="eid",outcome="asked"}} {float(M_EID)}' in text
        assert f'cityid_stepups_total{{method="eid",outcome="abandoned"}} {float(M_EID)}' in text
        assert f'cityid_funnel_steps_total{{outcome="refused",step="consent"}} {float(K_REFUSED)}' in text


def test_counts_survive_the_daily_roll_up(pair: Pair) -> None:
    """The same figures once the day is rolled up (the dashboard then reads the daily rows)."""
    _script(pair)
    _expire_sessions(pair)
    today = utcnow().date()
    rng = report.Range(today, today)
    with pair.a.sessions()() as s:
        before = report.dashboard(s, rng)
    with transaction(pair.a.sessions()) as s:
        # 02:00 UTC of the next day: today is complete (the roll-up leaves an hour's margin), and
        # tomorrow is not, at whatever time of day the test runs (utcnow() + 26 h after 22:00
        # UTC is the day after tomorrow, which rolled up tomorrow too)
        tomorrow_2am = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(2), tzinfo=dt.UTC)
        assert report.roll_up(s, tomorrow_2am) >= 1
    with pair.a.sessions()() as s:
        after = report.dashboard(s, rng)
        assert report.rolled_until(s) == today + dt.timedelta(days=1)
        totals: dict[Any, int] = report.totals(s)
    assert after.funnels == before.funnels and after.logins == before.logins == N_LOW
    assert totals[("code", "issued", "low", "password")] == N_LOW
