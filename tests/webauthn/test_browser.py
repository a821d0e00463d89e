"""WebAuthn in real Chromium (Playwright) with Chrome's virtual authenticator (DevTools
``WebAuthn`` domain): register a key, then a relying service asks for *substantial* and the
step at ``/login/webauthn`` decides what the key is worth.

Chrome's virtual authenticator is not a certified hardware authenticator. Its ``packed``
attestation is signed by a self-signed "Batch Certificate" (O=Chromium) that no real trust
list contains. So:

- with cityid's default trust it is an unattested passkey: kept at *low*, and an essential
  *substantial* request ends in ``unmet_authentication_requirements``;
- only the TEST-ONLY MDS3 blob written by ``tests/webauthn/mds.py`` (signed by a TEST MDS root
  made at run time, listing the virtual authenticator's AAGUID with its batch certificate as
  the attestation root) makes cityid trust it, which shows the *substantial* path end to end.
  No deployment configuration does this.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from db import transaction
from idp.config import WebAuthnConfig
from idp.webauthn_models import WebAuthnCredential
from policies import ACR_SUBSTANTIAL, Level
from tests.conftest import SERVER_POLL_SECONDS
from tests.idp.conftest import Idp, free_port
from tests.stepup.conftest import PASSWORD, Rp
from tests.webauthn.mds import CHROMIUM_VIRTUAL_AAGUID, CHROMIUM_VIRTUAL_BATCH, write_test_mds3

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ESSENTIAL_SUBSTANTIAL = json.dumps({"id_token": {"acr": {"essential": True, "value": ACR_SUBSTANTIAL}}})


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium (never skipped)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def redirect_uri() -> Iterator[str]:
    """The relying service's callback: a real listener that answers 200 (Chrome refuses port 9)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"relying service")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=httpd.serve_forever, args=(SERVER_POLL_SECONDS,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/cb"
    httpd.shutdown()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A fresh browser profile with Chrome's virtual CTAP2 platform authenticator (UV capable)."""
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    yield page
    context.close()


def _log_in_and_register(page: Any, idp: Idp, email: str) -> dict[str, Any]:
    page.goto(f"{idp.url}/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{idp.url}/account**")
    page.goto(f"{idp.url}/account/security-keys")
    page.fill("#webauthn-name", "Chrome virtual key")
    with page.expect_response(f"{idp.url}/account/security-keys/register/finish") as finished:
        page.click("#webauthn-register")
    assert finished.value.status == 200
    page.wait_for_selector("td.key-name")  # the page reloads with the key listed
    assert page.text_content("td.key-name") == "Chrome virtual key"
    with transaction(idp.sessions()) as s:  # what the server stored (the reply's body is gone)
        row = s.execute(select(WebAuthnCredential)).scalar_one()
        return {
            "attestation_format": row.attestation_format,
            "attestation_trusted": row.attestation_trusted,
            "level": Level(row.max_level).label if row.max_level is not None else None,
            "assessment": row.assessment,
        }


def _rp(idp: Idp, redirect_uri: str) -> Rp:
    cid, secret = idp.add_client(name="Kfz-Zulassung", redirect_uris=[redirect_uri])
    return Rp(idp, cid, secret, redirect_uri=redirect_uri)


def test_virtual_authenticator_trusted_by_test_mds3_steps_up_to_substantial(
    idp_factory, page, redirect_uri, tmp_path
):
    blob, root = write_test_mds3(tmp_path, CHROMIUM_VIRTUAL_AAGUID, CHROMIUM_VIRTUAL_BATCH)
    idp: Idp = idp_factory(
        host="localhost", webauthn=WebAuthnConfig(mds3_blob_file=str(blob), mds3_root_file=str(root))
    )
    idp.add_user("erika@example.org")
    rp = _rp(idp, redirect_uri)

    registered = _log_in_and_register(page, idp, "erika@example.org")
    assert registered["attestation_format"] == "packed"
    assert registered["attestation_trusted"] is True, (
        "Chrome's virtual authenticator no longer chains to the recorded batch certificate "
        "(tests/webauthn/vectors): re-record it"
    )
    assert registered["level"] == "substantial"
    assert page.text_content("td.key-level").strip() == "Substantial"

    url, verifier, _state = rp.authorize_url(claims=ESSENTIAL_SUBSTANTIAL)
    page.goto(url)
    page.wait_for_url(f"{idp.url}/login/webauthn?**")  # password held; the key is the step
    page.click("#webauthn-authenticate")
    page.wait_for_selector("button[name=decision][value=allow]")
    page.click("button[name=decision][value=allow]")
    page.wait_for_url(f"{redirect_uri}**")

    token = rp.redeem(page.url, verifier)
    claims = rp.claims(token["id_token"])
    assert claims["acr"] == ACR_SUBSTANTIAL
    assert {"pwd", "hwk", "mfa"} <= set(claims["amr"])


def test_virtual_authenticator_untrusted_by_default_stays_low_and_substantial_is_refused(
    idp_factory, page, redirect_uri
):
    idp: Idp = idp_factory(host="localhost")  # default trust: no MDS3 blob
    idp.add_user("max@example.org")
    rp = _rp(idp, redirect_uri)

    registered = _log_in_and_register(page, idp, "max@example.org")
    assert registered["attestation_format"] == "packed"
    assert registered["attestation_trusted"] is False
    assert registered["level"] == "low"
    assert page.text_content("td.key-level").strip() == "Basic"

    # Using the passkey at the step records it, at low: the session does not reach substantial.
    page.goto(f"{idp.url}/login/webauthn")
    with page.expect_response(f"{idp.url}/login/webauthn/finish") as finished:
        page.click("#webauthn-authenticate")
    assert finished.value.status == 200, finished.value.text()
    page.wait_for_url(f"{idp.url}/account**")

    url, _verifier, state = rp.authorize_url(claims=ESSENTIAL_SUBSTANTIAL)
    page.goto(url)
    page.wait_for_url(f"{redirect_uri}**")
    answer = dict(p.split("=", 1) for p in page.url.split("?", 1)[1].split("&"))
    assert answer["error"] == "unmet_authentication_requirements"  # OIDC Core §5.5.1.1 errata
    assert answer["state"] == state and "code" not in answer
