"""axe-core (WCAG 2.1 A and AA) on every citizen page, in all five languages, on a phone.

Each page is also checked for reflow (WCAG 1.4.10: no horizontal scrolling at 320 CSS pixels)
and saved as a screenshot under tests/artifacts/screens/.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pki
from db import transaction
from idp import accounts
from idp.config import BrandingConfig
from tests.browser.conftest import DemoService, axe, screenshot
from tests.conftest import BACKENDS
from tests.signing.citizen_helpers import make_pdf

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


def reset_token(idp: Any, email: str, purpose: str = "reset", **kw: Any) -> str:
    """A live link, as the mail would carry it (link pages are checked on load)."""
    with transaction(idp.sessions()) as s:
        acct = accounts.find_by_email(s, idp.keys, email)
        assert acct is not None
        return accounts.issue_email_token(s, idp.keys, acct, purpose, dt.timedelta(minutes=30), **kw)


def no_horizontal_scroll(page: Any, name: str) -> None:
    page.set_viewport_size({"width": 320, "height": 640})
    wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    page.set_viewport_size({"width": 390, "height": 844})
    assert wide <= 0, f"{name}: {wide}px of horizontal scrolling at 320 px width (WCAG 1.4.10)"


@pytest.mark.parametrize("lang", ["de", "en", "tr", "ar", "uk"])
def test_every_page_passes_axe_wcag21_aa(
    idp_factory: Any, demo_service: DemoService, chromium: Any, lang: str, tmp_path: Path
) -> None:
    video, transcript = tmp_path / "dgs.webm", tmp_path / "dgs.txt"
    video.write_bytes(b"\x1a\x45\xdf\xa3" + b"\0" * 64)
    transcript.write_text("Willkommen beim Bürgerkonto.\n\nSo melden Sie sich an.", encoding="utf-8")
    idp = idp_factory(
        branding=BrandingConfig(
            accessibility_contact="barrierefreiheit@musterstadt.example",
            accessibility_statement_date="2026-11-30",
            sign_language_video=str(video),
            sign_language_transcript_file=str(transcript),
        )
    )
    demo_service.issuer = idp.url
    demo_service.client_id, demo_service.secret = idp.add_client(
        name="Stadtbücherei", redirect_uris=[demo_service.redirect_uri]
    )
    idp.add_user("frieda@example.org", PASSWORD)
    with transaction(idp.sessions()) as s:  # the CA: "Check a signed document" trusts its root
        cfg = idp.config
        pki.init_ca(s, cfg.ca, pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase), cfg.issuer)
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
        visit("reset-link-invalid", "/reset?token=unknown")
        visit("reset", f"/reset?token={reset_token(idp, 'frieda@example.org')}")
        visit("reset-error", lambda: submit(page, {"#password": PASSWORD, "#password2": "anders"}))
        visit("statement", "/barrierefreiheit")
        visit("statement-feedback-error", lambda: submit(page, {"#message": " ", "#email": "nope"}))
        visit(
            "statement-feedback-sent", lambda: submit(page, {"#message": "Kontrast zu gering", "#email": ""})
        )
        visit("leichte-sprache", "/leichte-sprache")
        visit("gebaerdensprache", "/gebaerdensprache")
        visit("link-invalid", "/verify?token=unknown")
        visit("not-found", "/nowhere")
        visit("signature-check", "/signatures/check")

        def upload(name: str, data: bytes) -> None:
            page.set_input_files(
                "#document", files=[{"name": name, "mimeType": "application/pdf", "buffer": data}]
            )
            with page.expect_navigation():
                page.click("form[action='/signatures/check'] button")

        visit("signature-check-error", lambda: upload("brief.pdf", b"not a pdf"))
        visit("signature-check-result", lambda: upload("antrag.pdf", make_pdf()))
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
        visit("email-change-confirm-invalid", "/account/email/confirm?token=unknown")
        change = reset_token(
            idp, "frieda@example.org", accounts.EMAIL_CHANGE, new_email="frieda.neu@example.org"
        )
        visit("email-change-confirm", f"/account/email/confirm?token={change}")
        visit("password-change", "/account/password")
        visit(
            "password-change-error",
            lambda: submit(
                page,
                {"#current_password": "falsch", "#password": PASSWORD, "#password2": PASSWORD},
                "form[action='/account/password'] button",
            ),
        )
        visit("delete", "/account/delete")
        visit(
            "delete-error",
            lambda: submit(page, {"#password": "not my password"}, "button.danger"),
        )
        visit("logout-confirm", "/logout")
        visit("logged-out", lambda: submit(page, {}, "form button[type=submit]"))
    finally:
        ctx.close()
    assert len(seen) == 32
