"""Page layout a sighted citizen notices: form controls in the page's font, room around the error
alert and around the consent page's hint (measured in Chromium, not read from the CSS)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import DemoService, screenshot
from tests.conftest import BACKENDS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.parametrize("db_url", [BACKENDS[-1]], indirect=True),
]

PASSWORD = "correct horse battery staple"
ROOM = 16  # CSS pixels between blocks that belong apart (1rem)


def _gap(page: Any, upper: str, lower: str) -> float:
    """Vertical space between the bottom of ``upper`` and the top of ``lower``."""
    return float(
        page.evaluate(
            "([u, l]) => document.querySelector(l).getBoundingClientRect().top"
            " - document.querySelector(u).getBoundingClientRect().bottom",
            [upper, lower],
        )
    )


def test_form_inputs_use_the_page_font_and_the_error_alert_has_room(idp_factory: Any, context: Any) -> None:
    idp = idp_factory()
    idp.add_user("frieda@example.org", PASSWORD)
    page = context.new_page()
    page.goto(idp.url + "/login")
    page.fill("input[name=email]", "frieda@example.org")
    page.fill("input[name=password]", "not her password")
    with page.expect_navigation():
        page.click("form button[type=submit]")
    screenshot(page, "layout-login-error")
    fonts = page.evaluate(
        "() => ['body', 'input[name=email]', 'input[name=password]', 'form button']"
        ".map(s => getComputedStyle(document.querySelector(s)).fontFamily)"
    )
    assert len(set(fonts)) == 1, fonts
    assert _gap(page, "#form-error", "label[for=email]") >= ROOM


def test_consent_hint_stands_apart_from_the_buttons_and_the_footer(
    idp_factory: Any, demo_service: DemoService, context: Any
) -> None:
    idp = idp_factory()
    demo_service.issuer = idp.url
    demo_service.client_id, demo_service.secret = idp.add_client(
        name="Stadtbücherei", redirect_uris=[demo_service.redirect_uri]
    )
    idp.add_user("frieda@example.org", PASSWORD)
    page = context.new_page()
    page.goto(demo_service.start_url())
    page.fill("input[name=email]", "frieda@example.org")
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("form button[type=submit]")
    page.wait_for_selector("button[value=allow]")
    screenshot(page, "layout-consent")
    assert _gap(page, "main form", "main p.hint.after-actions") >= ROOM
    assert _gap(page, "main p.hint.after-actions", "footer.site") >= ROOM
