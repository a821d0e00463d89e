"""RFC 9110 §15.5.6: a 405 response MUST carry Allow, the methods the resource supports.

Found by schemathesis' unsupported_method check against `cityid serve` (issue 18 fuzz campaign):
the error handler rebuilt every HTTP error's response and dropped werkzeug's Allow header.
"""

from __future__ import annotations

from tests.idp.conftest import Idp


def _allow(value: str) -> set[str]:
    return {m.strip() for m in value.split(",")}


def test_405_at_a_json_endpoint_names_the_allowed_methods(idp: Idp) -> None:
    resp = idp.app.test_client().put("/api/smartcard/approve", json={})
    assert resp.status_code == 405
    assert "POST" in _allow(resp.headers["Allow"])
    body = resp.get_json()
    assert body["error"] == "invalid_request" and body["error_description"]


def test_405_at_a_page_names_the_allowed_methods(idp: Idp) -> None:
    resp = idp.app.test_client().open("/login", method="TRACE")
    assert resp.status_code == 405
    assert {"GET", "POST"} <= _allow(resp.headers["Allow"])
    assert resp.mimetype == "text/html"


def test_405_at_ocsp_and_token_names_the_allowed_methods(idp: Idp) -> None:
    c = idp.app.test_client()
    token = c.put("/token")
    assert token.status_code == 405 and "POST" in _allow(token.headers["Allow"])
    ocsp = c.put("/pki/ocsp", data=b"x")
    assert ocsp.status_code == 405 and "POST" in _allow(ocsp.headers["Allow"])
