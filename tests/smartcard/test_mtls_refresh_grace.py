"""The refresh grace window (idp.oauth.rotation) with certificate-bound tokens (RFC 8705): a
retry with the same device certificate gets the same tokens; with another, the grant is revoked."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests
from sqlalchemy import select

from db import transaction
from idp.models import Grant
from tests.smartcard.conftest import World, enrolled
from tests.smartcard.test_mtls import HEADER, _configure_proxy_header, _token_with_cert


def _refresh(world: World, rt: str, pem: str | None) -> requests.Response:
    data = {"grant_type": "refresh_token", "refresh_token": rt, "client_id": world.app_id}
    headers = {HEADER: quote(pem)} if pem else {}
    return requests.post(f"{world.idp.url}/token", timeout=10, headers=headers, data=data)


def _reasons(world: World) -> list[Any]:
    with transaction(world.idp.sessions()) as s:
        return list(s.scalars(select(Grant.revoked_reason).where(Grant.revoked_at.is_not(None))))


def test_a_retry_with_the_same_device_certificate_gets_the_same_tokens_rfc8705_4(world: World) -> None:
    _configure_proxy_header(world)
    browser, device = enrolled(world, "mara@example.org")
    cert_pem = device.token.state["certificate"]
    tok = _token_with_cert(world, browser, "mara@example.org", cert_pem).json()
    first = _refresh(world, tok["refresh_token"], cert_pem)
    retry = _refresh(world, tok["refresh_token"], cert_pem)
    assert first.status_code == 200 and retry.status_code == 200, retry.text
    assert retry.json()["access_token"] == first.json()["access_token"]
    assert retry.json()["refresh_token"] == first.json()["refresh_token"]
    assert _reasons(world) == []


def test_a_replay_with_another_certificate_within_the_window_revokes_the_grant_rfc8705_4(
    world: World,
) -> None:
    _configure_proxy_header(world)
    browser, device = enrolled(world, "mara@example.org")
    cert_pem = device.token.state["certificate"]
    tok = _token_with_cert(world, browser, "mara@example.org", cert_pem).json()
    first = _refresh(world, tok["refresh_token"], cert_pem)
    assert first.status_code == 200, first.text
    _b2, other = enrolled(world, "otto@example.org", name="other")
    replay = _refresh(world, tok["refresh_token"], other.token.state["certificate"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert _reasons(world) == ["refresh token replayed with another certificate"]
    assert _refresh(world, first.json()["refresh_token"], cert_pem).status_code == 400  # the family is gone
