"""A city service's single-page app (a public client on its own origin) uses cityid from the
browser: discovery, the code exchange at /token and /userinfo are readable cross-origin (CORS,
Fetch §3.2), the citizen's cookie pages are not."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.conftest import DemoService
from tests.conftest import BACKENDS
from tests.idp.conftest import Browser
from tests.idp.test_code_flow import _rp, login_and_get_code

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.parametrize("db_url", [BACKENDS[-1]], indirect=True),
]

FETCH = """async ([url, init]) => {
  try {
    const r = await fetch(url, init);
    return {status: r.status, body: await r.text()};
  } catch (e) {
    return {error: String(e)};
  }
}"""


def test_a_single_page_app_on_another_origin_redeems_its_code_and_reads_userinfo(
    idp_factory: Any, demo_service: DemoService, context: Any
) -> None:
    idp = idp_factory()
    spa = demo_service.url  # the app's origin: another port is another origin
    redirect = f"{spa}/callback"
    cid, _ = idp.add_client(name="City app", redirect_uris=[redirect], auth_method="none")
    idp.add_user("ada@example.org")
    callback, verifier, _nonce, _state = login_and_get_code(
        idp, Browser(idp), _rp(idp, cid, None, redirect), "ada@example.org"
    )
    code = parse_qs(urlsplit(callback).query)["code"][0]

    page = context.new_page()
    page.goto(f"{spa}/start-page")  # any page of the app's origin
    meta = page.evaluate(FETCH, [f"{idp.url}/.well-known/openid-configuration", {}])
    assert meta.get("status") == 200, meta

    form = f"grant_type=authorization_code&code={code}&redirect_uri={redirect}&client_id={cid}"
    form += f"&code_verifier={verifier}"
    init = {"method": "POST", "headers": {"Content-Type": "application/x-www-form-urlencoded"}, "body": form}
    token = page.evaluate(FETCH, [f"{idp.url}/token", init])
    assert token.get("status") == 200 and "access_token" in token["body"], token

    access = json.loads(token["body"])["access_token"]
    # an Authorization header makes the browser ask first (a preflight)
    info = page.evaluate(FETCH, [f"{idp.url}/userinfo", {"headers": {"Authorization": f"Bearer {access}"}}])
    assert info.get("status") == 200 and '"sub"' in info["body"], info

    # the citizen's pages use the session cookie: another origin may not read them
    account = page.evaluate(FETCH, [f"{idp.url}/account", {"credentials": "include"}])
    assert "error" in account and "Failed to fetch" in account["error"], account
