"""What an administrator can register for a service: exact, safe URIs and public keys only."""

from __future__ import annotations

from typing import Any

import pytest

from idp.clients import ClientError, ClientSpec, validate_spec

GOOD = "https://rp.example/cb"


@pytest.mark.parametrize(
    "uri",
    [
        "https://rp.example/cb#",  # an empty fragment: an error redirect would land in it
        "https://rp.example/cb#x",
        "https://*.example.org/cb",
        "https://user:pw@rp.example/cb",
        "https://rp.example:99999/cb",
        "https://rp.example/cb\r\nX: y",
        "https://rp.example/\u202ecb",
        "javascript:alert(1)",
        "http://rp.example/cb",  # plain http off loopback
    ],
)
def test_a_redirect_uri_must_be_one_exact_safe_uri_rfc6749_3_1_2_rfc9700_2_1(uri: str) -> None:
    with pytest.raises(ClientError):
        validate_spec(ClientSpec(name="Svc", redirect_uris=[uri]))


@pytest.mark.parametrize(
    "jwks",
    [
        {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]},  # symmetric: HS256 assertions would pass
        {"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": "private"}]},
        {"keys": [{"kty": "RSA", "n": "a", "e": "AQAB", "p": "x", "q": "y"}]},
        {"hello": "world"},
        {"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}] * 11},
    ],
)
def test_a_jwks_holds_public_keys_only_rfc7517(jwks: dict[str, Any]) -> None:
    spec = ClientSpec(
        name="Svc", grant_types=["client_credentials"], auth_method="private_key_jwt", jwks=jwks
    )
    with pytest.raises(ClientError):
        validate_spec(spec)


@pytest.mark.parametrize("name", ["Stadtwerke\u202e", "Line\nbreak", "A" * 101, "\x1b[31mRed"])
def test_a_service_name_shown_to_citizens_cannot_spoof_the_page(name: str) -> None:
    with pytest.raises(ClientError):
        validate_spec(ClientSpec(name=name, redirect_uris=[GOOD]))


def test_usual_registrations_pass() -> None:
    validate_spec(ClientSpec(name="Bürgeramt online", redirect_uris=[GOOD, "http://127.0.0.1:8080/cb"]))
    validate_spec(ClientSpec(name="City app", auth_method="none", redirect_uris=["de.musterstadt.app:/cb"]))
    key = {"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "kid": "k1"}
    validate_spec(
        ClientSpec(
            name="Registry",
            grant_types=["client_credentials"],
            auth_method="private_key_jwt",
            jwks={"keys": [key]},
        )
    )
