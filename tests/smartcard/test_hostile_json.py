"""JSON nested deeper than the parser's recursion limit at the device API: 400, not a 500."""

from __future__ import annotations

import pytest
import requests

from tests.smartcard.conftest import World, app_token, citizen

# ≈ 1,000 levels is past Python's recursion limit; the body is valid JSON (and far below 1 MiB)
DEEP = '{"a":' * 5000 + "1" + "}" * 5000
DEEP_LIST = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize("body", [DEEP, DEEP_LIST], ids=["object", "list"])
@pytest.mark.parametrize("path", ["/api/smartcard/approve", "/api/smartcard/renew"])
def test_deeply_nested_json_is_invalid_request_not_a_server_error(world: World, path: str, body: str) -> None:
    r = requests.post(
        f"{world.idp.url}{path}", data=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request"
    assert set(r.json()) == {"error", "error_description"}


def test_deeply_nested_json_at_enroll_is_invalid_request_not_a_server_error(world: World) -> None:
    browser = citizen(world, "nest@example.org")
    at, dpop = app_token(world, browser, "nest@example.org")
    url = f"{world.idp.url}/api/smartcard/enroll"
    r = requests.post(
        url,
        data=DEEP,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"DPoP {at}",
            "DPoP": dpop.proof("POST", url, access_token=at),
        },
        timeout=10,
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request"
    assert world.audit("smartcard.enroll", "denied"), "the refusal is audited"
