"""A citizen's whole journey in real Chromium, by keyboard alone, checked by axe-core on every page.

register -> e-mail link -> login -> consent -> back at the service; My account; data export;
language switch; logout; login; account deletion (the service hears of it); login refused.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from idp.config import BrandingConfig, SmtpConfig
from idp.oauth.backchannel import deliver_due
from tests.browser.conftest import ARTIFACTS, DemoService, axe, screenshot, tab_to, type_into
from tests.conftest import BACKENDS
from tests.pages.helpers import init_ca

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    # one backend is enough for the pages (PostgreSQL when CI has it); the flows run on both in tests/idp
    pytest.mark.parametrize("db_url", [BACKENDS[-1]], indirect=True),
]

PASSWORD = "Rathausplatz 1 ist mein Lieblingsort"
BRAND = BrandingConfig(
    city_name="Musterstadt",
    logo_url="/static/logo-musterstadt.svg",
    imprint_url="/static/impressum.html",
    privacy_url="/static/datenschutz.html",
)


def start(idp_factory: Any, smtp_server: Any, demo_service: DemoService) -> Any:
    inbox, port = smtp_server
    idp = idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=port), branding=BRAND)
    init_ca(idp)
    demo_service.issuer = idp.url
    demo_service.client_id, demo_service.secret = idp.add_client(
        name="Stadtbücherei",
        redirect_uris=[demo_service.redirect_uri],
        backchannel_logout_uri=demo_service.url + "/backchannel",
    )
    return idp, inbox


def check(page: Any, name: str) -> None:
    axe(page, name)
    screenshot(page, name)


def h1(page: Any) -> str:
    return str(page.locator("h1").inner_text()).strip()


def keyboard_login(page: Any, email: str, password: str) -> None:
    type_into(page, "#email", email)
    type_into(page, "#password", password)
    tab_to(page, "form button[type=submit]")
    with page.expect_navigation():
        page.keyboard.press("Enter")


def test_citizen_journey_by_keyboard(
    idp_factory: Any, smtp_server: Any, demo_service: DemoService, context: Any
) -> None:
    idp, inbox = start(idp_factory, smtp_server, demo_service)
    page = context.new_page()

    # The service sends the citizen to log in.
    page.goto(demo_service.start_url())
    assert page.url.startswith(idp.url + "/login")
    assert "Stadtbücherei bittet Sie, sich mit Ihrem Bürgerkonto anzumelden." in page.content()
    check(page, "01-login-for-service-de")

    # No account yet: register, by keyboard.
    tab_to(page, "a[href='/register']")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_url("**/register")
    check(page, "02-register-de")
    type_into(page, "#email", "lotte@example.org")
    type_into(page, "#password", PASSWORD)
    type_into(page, "#password2", PASSWORD)
    tab_to(page, "form button[type=submit]")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert h1(page) == "Bitte sehen Sie in Ihr Postfach"
    check(page, "03-check-inbox-de")

    # The e-mail link, from the real SMTP server.
    mail = inbox.wait_for("lotte@example.org")
    link = re.search(r"http://\S+/verify\?token=\S+", mail.get_content())
    assert link, mail.get_content()
    page.goto(link.group(0))  # opening the link confirms nothing yet (mail scanners open links)
    assert h1(page) == "E-Mail-Adresse bestätigen"
    check(page, "04-confirm-email-de")
    type_into(page, "#password", PASSWORD)  # the password chosen at registration confirms it
    tab_to(page, "button[type=submit]")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert h1(page) == "E-Mail-Adresse bestätigt"
    check(page, "04-email-confirmed-de")
    tab_to(page, "a.button[href='/login']")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_url("**/login")

    # Log in -> the waiting sign-in continues to the consent page.
    keyboard_login(page, "lotte@example.org", PASSWORD)
    assert h1(page) == "Daten an Stadtbücherei weitergeben?"
    assert (
        "Ihre E-Mail-Adresse" in page.content() and "Niedrig: E-Mail-Adresse und Passwort" in page.content()
    )
    check(page, "05-consent-de")
    tab_to(page, "button[value=allow]")
    page.keyboard.press("Space")
    page.wait_for_url(demo_service.url + "/callback**")
    assert page.locator("#signed-in").inner_text() == "Angemeldet als lotte@example.org"
    screenshot(page, "06-back-at-the-service")
    sub = demo_service.claims[-1]["sub"]

    # My account: profile, the consent, the security log.
    page.goto(idp.url + "/account")
    assert h1(page) == "Mein Konto"
    content = page.content()
    assert "lotte@example.org" in content and "Stadtbücherei" in content
    assert "Mit Passwort angemeldet" in content and "Dienst zugestimmt" in content
    check(page, "07-account-de")

    # Data export (GDPR Art. 15/20): a JSON download, by keyboard.
    tab_to(page, "form[action='/account/export'] button")
    with page.expect_download() as dl:
        page.keyboard.press("Enter")
    path = ARTIFACTS / "export.json"
    dl.value.save_as(str(path))
    data = json.loads(path.read_text())
    assert data["account"]["email"] == "lotte@example.org"
    assert [c["service"] for c in data["consents"]] == ["Stadtbücherei"]
    assert {"account.create", "email.verify", "login.password", "consent.grant"} <= {
        e["action"] for e in data["audit"]
    }

    # Language switch, by keyboard: the same page in English, remembered.
    tab_to(page, "a[hreflang=en]")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_url("**/account")
    assert h1(page) == "My account" and page.locator("html").get_attribute("lang") == "en"
    check(page, "08-account-en")
    page.goto(idp.url + "/register")
    assert h1(page) == "Create an account"

    # Log out, by keyboard.
    page.goto(idp.url + "/account")
    tab_to(page, "form.logout button")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert h1(page) == "You are logged out"
    check(page, "09-logged-out-en")
    page.go_back()  # the back button shows no account page
    page.reload()
    assert "/login" in page.url

    # Log in again and delete the account (GDPR Art. 17), by keyboard.
    page.goto(idp.url + "/lang/de?next=/login")
    keyboard_login(page, "lotte@example.org", PASSWORD)
    assert h1(page) == "Mein Konto"
    tab_to(page, "a[href='/account/delete']")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_url("**/account/delete")
    check(page, "10-delete-de")
    type_into(page, "#password", PASSWORD)
    tab_to(page, "#confirm")
    page.keyboard.press("Space")
    assert page.locator("#confirm").is_checked()
    tab_to(page, "button.danger")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert h1(page) == "Ihr Konto wurde gelöscht"
    check(page, "11-deleted-de")

    # The service hears of it by back-channel logout.
    assert deliver_due(idp.sessions(), idp.key_cache) >= 1
    assert demo_service.logout_event.wait(5)
    jwks = KeySet.import_key_set(requests.get(idp.url + "/jwks.json", timeout=10).json())
    assert jwt.decode(demo_service.logouts[-1], jwks).claims["sub"] == sub

    # And the old password opens nothing.
    page.goto(idp.url + "/login")
    keyboard_login(page, "lotte@example.org", PASSWORD)
    assert "E-Mail-Adresse oder Passwort ist falsch." in page.locator("[role=alert]").inner_text()
    check(page, "12-login-refused-de")
    page.close()
