"""JSON nested deeper than the parser's recursion limit at the WebAuthn endpoints: 400, not a 500."""

from __future__ import annotations

from typing import Any

import pytest

from tests.idp.conftest import Idp
from tests.webauthn.test_http import Citizen

DEEP = '{"a":' * 5000 + "1" + "}" * 5000

PATHS = [
    "/account/security-keys/register/begin",
    "/account/security-keys/register/finish",
    "/login/webauthn/begin",
    "/login/webauthn/finish",
]


@pytest.fixture
def idp(idp_factory: Any) -> Idp:
    served: Idp = idp_factory(host="localhost")
    return served


@pytest.mark.parametrize("path", PATHS)
def test_deeply_nested_json_is_invalid_request_not_a_server_error(idp: Idp, path: str) -> None:
    alice = Citizen(idp, "alice@example.org")
    r = alice.browser.http.post(
        f"{idp.url}{path}",
        data=DEEP,
        headers={"X-CSRF-Token": alice.csrf, "Content-Type": "application/json", "Accept-Language": "en"},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 400, r.text
    assert r.json() == {"error": "invalid_request", "error_description": "The request is not valid."}
