"""axe-core (WCAG 2.1 A and AA) on every citizen page, in all five languages, on a phone.

Each page is also checked for reflow (WCAG 1.4.10: no horizontal scrolling at 320 CSS pixels)
and saved as a screenshot under tests/artifacts/screens/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.browser.conftest import DemoService, axe, screenshot
from tests.conftest import BACKENDS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.parametrize("db_url", [BACKENDS[-1]], indirect=True),
]

PASSWORD = "correct horse battery staple"


def submit(page: Any, fields: dict[str, str], button: str = "form button[type=submit]") -> None:
    for selector, value in fields.items():
        page.fill(selector, value)
    with page.expect_navigation():
        page.click(button)


def no_horizontal_scroll(page: Any, name: str) -> None:
    page.set_viewport_size({"width": 320, "height": 640})
    wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    page.set_viewport_size({"width": 390, "height": 844})
    assert wide <= 0, f"{name}: {wide}px of horizontal scrolling at 320 px width (WCAG 1.4.10)"


@pytest.mark.parametrize("lang", ["de", "en", "tr", "ar", "uk"])
def test_every_page_passes_axe_wcag21_aa(
    idp_factory: Any, demo_service: DemoService, chromium: Any, lang: str
) -> None:
    idp = idp_factory()
    demo_service.issuer = idp.url
    demo_service.client_id, demo_service.secret = idp.add_client(
        name="Stadtbücherei", redirect_uris=[demo_service.redirect_uri]
    )
    idp.add_user("frieda@example.org", PASSWORD)
    ctx = chromium.new_context(
        bypass_csp=True, locale=f"{lang}-DE", viewport={"width": 390, "height": 844}, service_workers="block"
    )
    ctx.set_default_timeout(10_000)
    ctx.add_cookies([{"name": "lang", "value": lang, "url": idp.url}])
    page = ctx.new_page()
    seen: list[str] = []

    def visit(name: str, go: Callable[[], Any] | str) -> None:
        if isinstance(go, str):
            page.goto(idp.url + go)
        else:
            go()
        html = page.locator("html")
        assert (html.get_attribute("lang"), html.get_attribute("dir")) == (
            lang,
            "rtl" if lang == "ar" else "ltr",
        ), name
        axe(page, f"{lang}-{name}")
        no_horizontal_scroll(page, name)
        screenshot(page, f"axe-{lang}-{name}")
        seen.append(name)

    try:
        visit("start", "/")
        visit("register", "/register")
        visit(
            "register-error",
            lambda: submit(page, {"#email": "frieda@example", "#password": "kurz", "#password2": "anders"}),
        )
        visit("forgot", "/forgot")
        visit("forgot-sent", lambda: submit(page, {"#email": "nobody@example.org"}))
        visit("reset", "/reset?token=unknown")
        visit("link-invalid", "/verify?token=unknown")
        visit("not-found", "/nowhere")
        visit("login-for-service", lambda: page.goto(demo_service.start_url()))
        visit("login-error", lambda: submit(page, {"#email": "frieda@example.org", "#password": "falsch!"}))
        visit("consent", lambda: submit(page, {"#email": "frieda@example.org", "#password": PASSWORD}))
        with page.expect_navigation():
            page.click("button[value=allow]")
        assert page.url.startswith(demo_service.redirect_uri)
        visit("account", "/account")
        visit("email-change", "/account/email")
        visit(
            "email-change-error",
            lambda: submit(
                page,
                {"#email": "frieda.neu@example.org", "#password": "not my password"},
                "form[action='/account/email'] button",
            ),
        )
        visit("email-change-confirm", "/account/email/confirm?token=unknown")
        visit("delete", "/account/delete")
        visit(
            "delete-error",
            lambda: submit(page, {"#password": "not my password"}, "button.danger"),
        )
        visit("logout-confirm", "/logout")
        visit("logged-out", lambda: submit(page, {}, "form button[type=submit]"))
    finally:
        ctx.close()
    assert len(seen) == 19
