"""Every JSON error carries ``error_description`` (RFC 6749 §5.2 makes it optional; cityid's
documented contract is ``{"error", "error_description"}``, docs/device-api.md, ARCHITECTURE.md)."""

from __future__ import annotations

import base64
from typing import Any

from tests.idp.conftest import Idp


def _client(idp: Idp) -> Any:
    return idp.app.test_client()


def test_token_error_without_authlib_text_still_has_error_description(idp: Idp) -> None:
    # Authlib raises UnsupportedGrantTypeError() without a description for a missing grant_type
    resp = _client(idp).post("/token", data={})
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["error"] == "unsupported_grant_type"
    assert body["error_description"] == "the grant type is not supported"


def test_userinfo_refuses_a_machine_token_with_description_and_www_authenticate(idp: Idp) -> None:
    """OIDC Core §5.3.3 / RFC 6750 §3.1: a client-credentials token (scope openid) names no
    citizen; the 401 says so in error_description and WWW-Authenticate."""
    cid, secret = idp.add_client(name="Machine", grant_types=["client_credentials"])
    basic = base64.b64encode(f"{cid}:{secret}".encode()).decode()
    c = _client(idp)
    tok = c.post(
        "/token",
        data={"grant_type": "client_credentials", "scope": "openid profile"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert tok.status_code == 200, tok.get_json()
    resp = c.get("/userinfo", headers={"Authorization": f"Bearer {tok.get_json()['access_token']}"})
    assert resp.status_code == 401
    assert resp.get_json() == {
        "error": "invalid_token",
        "error_description": "the access token does not act for a citizen",
    }
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def test_token_refusal_with_undecodable_basic_credentials_is_not_a_500(idp: Idp) -> None:
    """RFC 7617 §2 / RFC 6749 §5.2: Basic credentials that are no base64 of UTF-8 are no
    credentials. Found by the fuzz campaign: a bad DPoP proof is audited with the client id the
    request claims, and reading it from such a header raised ValueError in werkzeug (a 500)."""
    c = _client(idp)
    for credentials in ("\u00db\u00db", "%%%", base64.b64encode(b"\xff\xfe:x").decode()):
        resp = c.post(
            "/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {credentials}", "DPoP": "not-a-jws"},
        )
        assert resp.status_code == 400, resp.get_data(as_text=True)
        assert resp.get_json()["error"] == "invalid_dpop_proof"


def test_undecodable_basic_credentials_read_as_none_on_every_request(idp: Idp) -> None:
    from flask import request

    with idp.app.test_request_context("/par", headers={"Authorization": "Basic \u00db\u00db"}):
        assert request.authorization is None
    with idp.app.test_request_context("/par", headers={"Authorization": "Basic Zm9vOmJhcg=="}):
        assert request.authorization is not None and request.authorization.username == "foo"
