"""The pages in a left-to-right and a right-to-left language, in real Chromium.

German (the city's language) and Arabic (right to left): the `lang`/`dir` of the page, a layout
that mirrors (logical CSS properties), e-mail addresses kept left to right inside Arabic text,
and the language switch without JavaScript. Screenshots go to tests/artifacts/screens/lang-*.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import PHONE, screenshot
from tests.conftest import BACKENDS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.parametrize("db_url", [BACKENDS[-1]], indirect=True),
]

PASSWORD = "correct horse battery staple"
EMAIL = "frieda@example.org"

# Where the text of an element starts and ends (its text, not its box: a label is a full-width
# block in either direction; its words sit at the start edge).
TEXT_BOX = """el => {
  const r = document.createRange(); r.selectNodeContents(el);
  const t = r.getBoundingClientRect(), b = el.getBoundingClientRect();
  return {textLeft: t.left, textRight: t.right, left: b.left, right: b.right};
}"""


def box(page: Any, selector: str) -> dict[str, float]:
    result: dict[str, float] = page.locator(selector).first.evaluate(TEXT_BOX)
    return result


def style(page: Any, selector: str, prop: str) -> str:
    return str(page.locator(selector).first.evaluate(f"el => getComputedStyle(el).{prop}"))


@pytest.mark.parametrize(
    ("lang", "browser_locale", "direction"), [("de", "de-DE", "ltr"), ("ar", "ar-SY", "rtl")]
)
def test_pages_follow_the_browser_language_and_mirror_for_right_to_left(
    idp_factory: Any, chromium: Any, lang: str, browser_locale: str, direction: str
) -> None:
    idp = idp_factory()
    idp.add_user(EMAIL, PASSWORD)
    # The browser's language (Accept-Language, from Chromium's locale) picks the page language.
    ctx = chromium.new_context(locale=browser_locale, viewport=PHONE, service_workers="block")
    ctx.set_default_timeout(10_000)
    page = ctx.new_page()
    try:
        page.goto(idp.url + "/login")
        html = page.locator("html")
        assert (html.get_attribute("lang"), html.get_attribute("dir")) == (lang, direction)
        assert style(page, "body", "direction") == direction

        # A label's words start at the same edge as its input: the left one in German, the
        # right one in Arabic (the layout is mirrored, not only the text aligned).
        label, field = box(page, "label[for=email]"), box(page, "#email")
        if direction == "rtl":
            assert abs(label["textRight"] - field["right"]) <= 1, (label, field)
            assert label["textLeft"] > field["left"] + 40, (label, field)
        else:
            assert abs(label["textLeft"] - field["left"]) <= 1, (label, field)
            assert label["textRight"] < field["right"] - 40, (label, field)
        # The e-mail field is written left to right in both (an address is not Arabic text).
        assert style(page, "#email", "direction") == "ltr"

        page.fill("#email", EMAIL)
        page.fill("#password", "wrong password")
        with page.expect_navigation():
            page.click("form button[type=submit]")
        # The error's coloured bar is on the start side: left in German, right in Arabic.
        start, end = ("borderLeftWidth", "borderRightWidth")[:: 1 if direction == "ltr" else -1]
        assert style(page, ".alert.error", start) == "5px" and style(page, ".alert.error", end) == "0px"
        screenshot(page, f"lang-{lang}-login-error")

        page.fill("#email", EMAIL)
        page.fill("#password", PASSWORD)
        with page.expect_navigation():
            page.click("form button[type=submit]")
        page.goto(idp.url + "/account")
        assert page.locator("html").get_attribute("dir") == direction
        # The address inside the Arabic page stays one left-to-right run, isolated from the text
        # around it (Unicode bidi isolate), and sits at the start edge of its line.
        address = page.locator("bdi.email")
        assert address.inner_text() == EMAIL
        assert style(page, "bdi.email", "direction") == "ltr"
        assert style(page, "bdi.email", "unicodeBidi") == "isolate"
        email, term = box(page, "bdi.email"), box(page, ".facts dt")
        if direction == "rtl":
            assert abs(email["right"] - term["textRight"]) <= 1, (email, term)
        else:
            assert abs(email["left"] - term["textLeft"]) <= 1, (email, term)
        # The characters are in reading order: "@" after the name, as typed.
        first = page.locator("bdi.email").evaluate(
            """el => { const r = document.createRange(); r.setStart(el.firstChild, 0);
                       r.setEnd(el.firstChild, 1); return r.getBoundingClientRect().left; }"""
        )
        assert abs(first - email["left"]) <= 1, "the address does not start at its left end"
        screenshot(page, f"lang-{lang}-account")
    finally:
        ctx.close()


def test_language_switch_works_without_javascript_and_is_remembered(idp_factory: Any, chromium: Any) -> None:
    idp = idp_factory()
    ctx = chromium.new_context(
        locale="de-DE", viewport=PHONE, java_script_enabled=False, service_workers="block"
    )
    ctx.set_default_timeout(10_000)
    page = ctx.new_page()
    try:
        page.goto(idp.url + "/register")
        nav = page.get_by_role("navigation", name="Sprache")
        names = nav.get_by_role("link").all_inner_texts()
        assert names == ["Deutsch", "English", "Türkçe", "العربية", "Українська"]
        assert nav.get_by_role("link", name="Deutsch").get_attribute("aria-current") == "true"

        with page.expect_navigation():
            nav.get_by_role("link", name="العربية").click()
        assert page.url == idp.url + "/register"  # back on the same page
        html = page.locator("html")
        assert (html.get_attribute("lang"), html.get_attribute("dir")) == ("ar", "rtl")
        nav = page.get_by_role("navigation", name="اللغة")
        assert nav.get_by_role("link", name="العربية").get_attribute("aria-current") == "true"
        screenshot(page, "lang-ar-register")

        with page.expect_navigation():
            nav.get_by_role("link", name="Türkçe").click()
        page.goto(idp.url + "/login")  # remembered on the next page
        assert (html.get_attribute("lang"), html.get_attribute("dir")) == ("tr", "ltr")
        assert page.get_by_role("heading", level=1).inner_text() == "Giriş yap"
        screenshot(page, "lang-tr-login")
    finally:
        ctx.close()
