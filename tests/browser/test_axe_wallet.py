"""axe-core (WCAG 2.1 A and AA) and reflow on the wallet pages, German and English: the ID card
page with "Use your ID wallet", the QR code / waiting page, the library card offer page."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from db import transaction
from idp.vci import store
from tests.browser.conftest import axe, screenshot
from tests.browser.test_axe import PASSWORD, no_horizontal_scroll, submit
from tests.conftest import BACKENDS
from tests.wallet.conftest import WalletWorld, status_server, world  # noqa: F401  (fixtures)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.parametrize("db_url", [BACKENDS[-1]], indirect=True),
]


@pytest.mark.parametrize("lang", ["de", "en"])
def test_wallet_pages_pass_axe_wcag21_aa(world: WalletWorld, chromium: Any, lang: str) -> None:  # noqa: F811
    idp = world.idp
    account = idp.add_user("frieda@example.org", PASSWORD)
    with transaction(idp.sessions()) as s:
        store.grant_card(
            s,
            idp.keys.personal_data,
            account_id=account,
            number="SB-1",
            given_name="Frieda",
            family_name="Muster",
            library="Stadtbibliothek",
            valid_until=dt.date.today() + dt.timedelta(days=30),
        )
    ctx = chromium.new_context(bypass_csp=True, locale=f"{lang}-DE", viewport={"width": 390, "height": 844})
    ctx.set_default_timeout(10_000)
    ctx.add_cookies([{"name": "lang", "value": lang, "url": idp.url}])
    page = ctx.new_page()

    def check(name: str) -> None:
        assert page.locator("html").get_attribute("lang") == lang, name
        axe(page, f"{lang}-{name}")
        no_horizontal_scroll(page, name)
        screenshot(page, f"axe-{lang}-{name}")

    try:
        page.goto(idp.url + "/login")
        submit(page, {"#email": "frieda@example.org", "#password": PASSWORD})
        page.goto(idp.url + "/login/eid")
        assert page.locator("button[value=wallet]").count() == 1
        check("wallet-choice")
        with page.expect_navigation():
            page.click("button[value=wallet]")
        assert "/login/eid/wallet" in page.url and page.locator("img[src^='data:image/svg+xml']").count() == 1
        check("wallet-qr")
        page.goto(idp.url + "/account/wallet-card")
        check("wallet-card")
    finally:
        ctx.close()
