"""BITV 2.0 beyond axe, in Debian's Chromium: what assistive technology is told (issue 17).

Form-error associations are read from Chromium's accessibility tree (CDP
``Accessibility.getPartialAXTree``: the computed name, description and invalid state a screen
reader gets), not from the markup; focus and title from the live page; the step-up page's live
region with the network cut.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import update

from db import transaction, utcnow
from idp.models import LoginSession
from tests.conftest import BACKENDS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.parametrize("db_url", [BACKENDS[-1]], indirect=True),
]

PASSWORD = "correct horse battery staple"


def ax(page: Any, selector: str) -> dict[str, Any]:
    """The accessibility-tree node Chromium computed for the element: role, name, description,
    invalid."""
    cdp = page.context.new_cdp_session(page)
    try:
        root = cdp.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        assert node, f"{selector} not on {page.url}"
        found = cdp.send("Accessibility.getPartialAXTree", {"nodeId": node, "fetchRelatives": False})
    finally:
        cdp.detach()
    n = found["nodes"][0]
    props = {p["name"]: p["value"].get("value") for p in n.get("properties", [])}
    return {
        "role": n.get("role", {}).get("value"),
        "name": n.get("name", {}).get("value", ""),
        "description": n.get("description", {}).get("value", ""),
        "invalid": props.get("invalid", "false"),
        "focused": bool(props.get("focused", False)),
    }


def send(page: Any, fields: dict[str, str], button: str = "main form button[type=submit]") -> None:
    for selector, value in fields.items():
        page.fill(selector, value)
    with page.expect_navigation():
        page.click(button)


def test_register_error_is_announced_on_its_field_only_in_the_accessibility_tree(
    idp_factory: Any, context: Any
) -> None:
    idp = idp_factory()
    page = context.new_page()
    page.goto(idp.url + "/register")
    send(page, {"#email": "anna@example.org", "#password": PASSWORD, "#password2": "something else"})
    wrong = ax(page, "#password2")
    assert wrong["invalid"] == "true"
    assert "Die beiden Passwörter stimmen nicht überein." in wrong["description"]
    for right in ("#email", "#password"):
        node = ax(page, right)
        assert node["invalid"] == "false", (right, node)
        assert "Passwörter" not in node["description"], (right, node)
    # WCAG 3.3.1 / 4.1.3: the title says so, the focus is on the field to correct
    assert page.title().startswith("Fehler: ")
    assert page.evaluate("document.activeElement.id") == "password2"
    assert ax(page, "#password2")["focused"]
    # the summary links to the field
    assert page.get_attribute("#error-summary a", "href") == "#password2"


def test_failed_login_is_announced_on_both_fields_without_naming_one(idp_factory: Any, context: Any) -> None:
    idp = idp_factory()
    idp.add_user("bert@example.org")
    page = context.new_page()
    page.goto(idp.url + "/login")
    send(page, {"#email": "bert@example.org", "#password": "not the password"})
    for selector in ("#email", "#password"):
        node = ax(page, selector)
        assert node["invalid"] == "true" and node["description"] == "E-Mail-Adresse oder Passwort ist falsch."
    assert page.evaluate("document.activeElement.id") == "email" and page.title().startswith("Fehler: ")


def test_unticked_deletion_box_is_the_field_in_error(idp_factory: Any, context: Any) -> None:
    idp = idp_factory()
    idp.add_user("carla@example.org")
    page = context.new_page()
    page.goto(idp.url + "/login")
    send(page, {"#email": "carla@example.org", "#password": PASSWORD})
    page.goto(idp.url + "/account/delete")
    send(page, {"#password": PASSWORD}, "button.danger")
    box = ax(page, "#confirm")
    assert box["role"] == "checkbox" and box["invalid"] == "true" and "Kästchen an" in box["description"]
    assert ax(page, "#password")["invalid"] == "false"
    assert page.evaluate("document.activeElement.id") == "confirm"


def test_a_form_whose_session_ran_out_keeps_what_was_typed(idp_factory: Any, context: Any) -> None:
    idp = idp_factory()
    page = context.new_page()
    page.goto(idp.url + "/register")
    page.fill("#email", "emil@example.org")
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    with transaction(idp.sessions()) as s:  # WCAG 2.2.1: the citizen took very long
        s.execute(update(LoginSession).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    assert page.input_value("#email") == "emil@example.org"
    assert page.input_value("#password") == "" and page.input_value("#password2") == ""
    assert "Formular war abgelaufen" in page.inner_text("[role=status]")
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    assert "Postfach" in page.inner_text("main")


def test_device_step_states_its_time_limit_and_announces_a_lost_connection(
    idp_factory: Any, context: Any
) -> None:
    idp = idp_factory()
    idp.add_user("dora@example.org")
    page = context.new_page()
    page.goto(idp.url + "/login")
    send(page, {"#email": "dora@example.org", "#password": PASSWORD})
    page.route("**/login/device/status*", lambda route: route.abort("internetdisconnected"))
    page.goto(idp.url + "/login/device")
    assert "Dieser Code gilt bis" in page.inner_text("#device-valid-until")  # WCAG 2.2.1
    live = page.locator("#device-poll-status")
    assert live.get_attribute("role") == "status"
    page.wait_for_function(
        "() => document.getElementById('device-poll-status').textContent.length > 0", timeout=10_000
    )
    assert live.inner_text().startswith("Zurzeit keine Verbindung zum Server")  # WCAG 4.1.3


def test_start_page_leads_to_leichte_sprache_and_sign_language_by_keyboard(
    idp_factory: Any, context: Any
) -> None:
    from tests.browser.conftest import tab_to

    idp = idp_factory()
    page = context.new_page()
    page.goto(idp.url + "/")
    tab_to(page, "main a[href='/leichte-sprache']")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith("/leichte-sprache") and "Bürger·konto" in page.inner_text("h1")
    tab_to(page, "footer a[href='/barrierefreiheit']", limit=80)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.inner_text("h1") == "Erklärung zur Barrierefreiheit"
