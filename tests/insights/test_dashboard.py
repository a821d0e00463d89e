"""/insights for city staff: role analyst or admin, level substantial by cityid's own step-up;
the scripted counts on the page; real Chromium with axe-core and screenshots (issue 15)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from db import transaction, utcnow
from idp.insights.access import change_role
from tests.browser.conftest import axe, chromium, screenshot  # noqa: F401  (fixture)
from tests.idp.conftest import Browser
from tests.insights.conftest import PASSWORD, Pair, login_page
from tests.insights.test_scripted_flows import K_REFUSED, M_EID, N_LOW, _expire_sessions, _script
from tests.stepup.conftest import eid_confirm

ANALYST = "analyst@musterstadt.example"


def _grant(idp: Any, email: str, role: str = "analyst") -> None:
    with transaction(idp.sessions()) as s:
        assert change_role(s, idp.keys, email, role, grant=True) is not None


def _cell(html: str, row: str) -> str:
    m = re.search(rf"<th scope=\"row\">{re.escape(row)}</th><td>([^<]*)</td>", html)
    assert m, f"no row {row!r}"
    return m.group(1)


def test_citizen_without_the_role_gets_403(pair: Pair) -> None:
    pair.a.add_user("citizen@example.org")
    browser = Browser(pair.a)
    page = browser.get(f"{pair.a.url}/insights")
    assert page.status_code == 302 and page.headers["Location"] == "/login"
    page = browser.login("citizen@example.org", PASSWORD, login_page(browser, f"{pair.a.url}/login"))
    assert page.status_code == 403, page.status_code
    assert "analyst" in page.text
    # no step-up is asked of a citizen who may not see the page anyway
    assert browser.get(f"{pair.a.url}/insights").status_code == 403
    assert browser.get(f"{pair.a.url}/insights/export.csv").status_code == 403


def test_analyst_at_low_is_stepped_up_and_sees_the_scripted_counts(pair: Pair) -> None:
    _script(pair)
    _expire_sessions(pair)
    pair.a.add_user(ANALYST)
    _grant(pair.a, ANALYST)
    browser = Browser(pair.b)  # the other instance: one database
    page = browser.follow(browser.get(f"{pair.b.url}/insights"))
    page = browser.login(ANALYST, PASSWORD, page)
    # low is not enough: cityid's own step-up (here the eID, as for a service asking substantial)
    assert page.status_code == 200 and "/login/eid" in page.url, page.url
    page = eid_confirm(browser, page)
    assert page.status_code == 200 and page.url.startswith(f"{pair.b.url}/insights"), (
        page.url,
        page.text[:300],
    )
    html = page.text
    cid = pair.rp.client_id
    assert _cell(html, "Bürgeramt") == str(N_LOW)  # logins per service, by the service's name
    assert _cell(html, "password") == str(N_LOW)  # methods
    assert _cell(html, "request / accepted") == str(N_LOW + M_EID + K_REFUSED)
    assert _cell(html, "consent / shown") == str(N_LOW + K_REFUSED)
    assert re.search(r"<th scope=\"row\">stepup / asked</th><td>2</td><td>2</td><td>100.0 %</td>", html)
    # the download is the open-data export (small counts suppressed)
    csv = browser.get(f"{pair.b.url}/insights/export.csv?since={utcnow().date()}&until={utcnow().date()}")
    assert csv.status_code == 200 and csv.text.startswith("date,service,metric,value\n")
    assert f",{cid},logins_low_password,<10" in csv.text
    # a selected service and range
    one = browser.get(f"{pair.b.url}/insights?service={cid}&since=2020-01-01&until={utcnow().date()}")
    assert one.status_code == 200 and "selected>" in one.text
    bad = browser.get(f"{pair.b.url}/insights?since=2026-13-40")
    assert bad.status_code == 200 and 'role="alert"' in bad.text


@pytest.mark.browser
@pytest.mark.xdist_group("browser")
@pytest.mark.parametrize("lang", ["de", "en"])
def test_dashboard_in_chromium_steps_up_an_analyst_passes_axe_and_refuses_a_citizen(
    pair: Pair,
    chromium: Any,  # noqa: F811
    lang: str,
) -> None:
    _script(pair)
    _expire_sessions(pair)
    pair.a.add_user(ANALYST)
    _grant(pair.a, ANALYST)
    pair.a.add_user("citizen@example.org")
    ctx = chromium.new_context(bypass_csp=True, locale=f"{lang}-DE", viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(15_000)
    try:
        page = ctx.new_page()
        page.goto(f"{pair.a.url}/insights")
        assert "/login" in page.url
        page.fill("#email", ANALYST)
        page.fill("#password", PASSWORD)
        with page.expect_navigation():
            page.click("form button[type=submit]")
        assert "/login/eid" in page.url, page.url  # stepped up, not refused
        with page.expect_navigation():
            page.click("button[name=eid]")
        with page.expect_navigation():
            page.click("form button[type=submit]")  # the simulator: Erika, high
        page.wait_for_url(re.compile(r".*/insights.*"))
        assert page.locator("h1").inner_text()
        assert page.locator("svg.chart").count() >= 2
        assert page.locator("table caption").count() >= 5
        axe(page, f"insights-dashboard-{lang}")
        screenshot(page, f"insights-dashboard-{lang}")
        page.select_option("#service", pair.rp.client_id)
        with page.expect_navigation():
            page.click("form.filters button[type=submit]")
        axe(page, f"insights-dashboard-service-{lang}")
        screenshot(page, f"insights-dashboard-service-{lang}")

        citizen = ctx.new_page()
        ctx.clear_cookies()
        citizen.goto(f"{pair.a.url}/insights")
        citizen.fill("#email", "citizen@example.org")
        citizen.fill("#password", PASSWORD)
        with citizen.expect_navigation() as nav:
            citizen.click("form button[type=submit]")
        assert nav.value is not None and nav.value.status == 403
        axe(citizen, f"insights-forbidden-{lang}")
        screenshot(citizen, f"insights-forbidden-{lang}")
    finally:
        ctx.close()


def test_metrics_and_dashboard_agree(pair: Pair) -> None:
    """The same scripted flows seen by /metrics with the token (anonymous refused)."""
    _script(pair)
    from idp.insights import funnel
    from tests.insights.conftest import METRICS_TOKEN

    funnel.flush(pair.a.app)  # instance a's background tick; b's scrape writes b's own counts
    text = requests.get(
        f"{pair.b.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    ).text
    assert f'cityid_logins_total{{level="low",method="password"}} {float(N_LOW)}' in text


def test_cli_grants_and_withdraws_the_analyst_role(pair: Pair, tmp_path: Any) -> None:
    import json

    from click.testing import CliRunner

    import cli
    from idp.admin import find_account
    from tests.insights.conftest import write_toml

    pair.a.add_user(ANALYST)
    data = str(write_toml(pair.a, tmp_path / "cli"))
    runner = CliRunner()
    res = runner.invoke(cli.main, ["user", "role", "add", ANALYST, "analyst", "--data-dir", data, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["granted"] is True
    with pair.a.sessions()() as s:
        assert find_account(s, pair.a.keys, ANALYST).roles == "analyst"  # type: ignore[union-attr]
    assert (
        runner.invoke(cli.main, ["user", "role", "add", ANALYST, "mayor", "--data-dir", data]).exit_code == 2
    )
    assert (
        runner.invoke(
            cli.main, ["user", "role", "add", "nobody@example.org", "analyst", "--data-dir", data]
        ).exit_code
        == 4
    )
    res = runner.invoke(cli.main, ["user", "role", "remove", ANALYST, "analyst", "--data-dir", data])
    assert res.exit_code == 0, res.output
    with pair.a.sessions()() as s:
        assert find_account(s, pair.a.keys, ANALYST).roles == ""  # type: ignore[union-attr]
    browser = Browser(pair.a)  # without the role again: 403
    page = browser.login(ANALYST, PASSWORD, browser.follow(browser.get(f"{pair.a.url}/insights")))
    assert page.status_code == 403
