"""Every JSON error carries ``error_description`` (RFC 6749 §5.2 makes it optional; cityid's
documented contract is ``{"error", "error_description"}``, docs/device-api.md, ARCHITECTURE.md)."""

from __future__ import annotations

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
