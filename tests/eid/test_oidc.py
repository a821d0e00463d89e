import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from idp.eid import errors
from idp.eid.connector import EidRequest, EidResponse
from idp.eid.oidc import OidcConnector, OidcSettings, _default_session
from policies import ACR_HIGH, ACR_LOW, ACR_SUBSTANTIAL, Level

ISSUER = "https://upstream.example"
CLIENT = "cityid"
UPSTREAM_KEY = ECKey.generate_key("P-256", parameters={"kid": "up-1"})
ATTACKER_KEY = ECKey.generate_key("P-256", parameters={"kid": "up-1"})


def settings(**kw):
    base = OidcSettings(
        issuer=ISSUER,
        client_id=CLIENT,
        client_secret="s3cret",
        redirect_uri="https://cityid.example/eid/oidc/callback",
        authorization_endpoint=f"{ISSUER}/authorize",
        token_endpoint=f"{ISSUER}/token",
        jwks=KeySet([UPSTREAM_KEY]).as_dict(private=False),
    )
    return replace(base, **kw)


def started(connector, level=Level.HIGH):
    return connector.start(EidRequest(level))


def id_token(pending, key=UPSTREAM_KEY, **overrides):
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": "pairwise-sub-123",
        "exp": now + 300,
        "iat": now,
        "auth_time": now - 5,
        "nonce": pending.nonce,
        "acr": ACR_HIGH,
        "given_name": "Erika",
        "family_name": "Mustermann",
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": "ES256", "kid": "up-1"}, claims, key)


def test_start_asks_code_flow_with_pkce_nonce_and_essential_acr_oidc_3_1_2_1():
    connector = OidcConnector(settings())
    start = started(connector, Level.SUBSTANTIAL)
    assert start.method == "GET"
    query = {k: v[0] for k, v in parse_qs(urlsplit(start.url).query).items()}
    assert query["response_type"] == "code" and query["client_id"] == CLIENT
    assert query["code_challenge_method"] == "S256" and query["code_challenge"]
    assert query["state"] == start.pending.relay_state
    assert query["nonce"] == start.pending.nonce
    assert query["acr_values"] == f"{ACR_SUBSTANTIAL} {ACR_HIGH}"
    essential = json.loads(query["claims"])["id_token"]["acr"]
    assert essential == {"essential": True, "values": [ACR_SUBSTANTIAL, ACR_HIGH]}
    assert start.pending.code_verifier not in start.url


def test_valid_id_token_maps_acr_to_level():
    connector = OidcConnector(settings())
    pending = started(connector).pending
    result = connector.validate_id_token(id_token(pending), pending)
    assert (result.pseudonym, result.level, result.acr) == ("pairwise-sub-123", Level.HIGH, ACR_HIGH)
    assert result.attribute("given_name").value == "Erika"
    assert result.attribute("given_name").source == ISSUER
    assert result.simulation is False


def test_upstream_acr_values_are_mapped_through_settings():
    connector = OidcConnector(settings(acr_levels={"urn:upstream:loa:4": Level.HIGH}))
    start = started(connector)
    assert "urn%3Aupstream%3Aloa%3A4" in start.url
    token = id_token(start.pending, acr="urn:upstream:loa:4")
    result = connector.validate_id_token(token, start.pending)
    assert result.level is Level.HIGH and result.authn_context == "urn:upstream:loa:4"
    assert result.acr == ACR_HIGH


NOW = int(time.time())


@pytest.mark.parametrize(
    ("overrides", "key", "error"),
    [
        pytest.param({}, ATTACKER_KEY, errors.SignatureInvalid, id="fail/foreign-key-3.1.3.7-6"),
        pytest.param({"iss": "https://evil.example"}, None, errors.IssuerMismatch, id="fail/iss-3.1.3.7-2"),
        pytest.param({"aud": "someone-else"}, None, errors.AudienceMismatch, id="fail/aud-3.1.3.7-3"),
        pytest.param(
            {"aud": [CLIENT, "other"]}, None, errors.AudienceMismatch, id="fail/multi-aud-no-azp-3.1.3.7-4"
        ),
        pytest.param({"exp": NOW - 3600}, None, errors.Expired, id="fail/expired-3.1.3.7-9"),
        pytest.param({"iat": NOW + 3600}, None, errors.NotYetValid, id="fail/iat-future-3.1.3.7-10"),
        pytest.param({"iat": NOW - 3600}, None, errors.Expired, id="fail/iat-too-old-3.1.3.7-10"),
        pytest.param({"exp": "soon"}, None, errors.MalformedResponse, id="fail/exp-not-numeric"),
        pytest.param({"exp": 10**400}, None, errors.MalformedResponse, id="fail/exp-beyond-any-date"),
        pytest.param(
            {"auth_time": 1e300}, None, errors.MalformedResponse, id="fail/auth-time-beyond-any-date"
        ),
        pytest.param({"nonce": "replayed"}, None, errors.NonceMismatch, id="fail/nonce-3.1.3.7-11"),
        pytest.param({"acr": "urn:weird"}, None, errors.LevelUnknown, id="fail/acr-unknown-3.1.3.7-12"),
        pytest.param({"acr": ACR_LOW}, None, errors.LevelTooLow, id="fail/acr-too-low-5.5.1.1"),
        pytest.param({"sub": None}, None, errors.PseudonymMissing, id="fail/no-sub"),
    ],
)
def test_id_token_refusals(overrides, key, error):
    connector = OidcConnector(settings())
    pending = started(connector).pending
    with pytest.raises(error):
        connector.validate_id_token(id_token(pending, key or UPSTREAM_KEY, **overrides), pending)


def test_multi_audience_with_our_azp_is_accepted():
    connector = OidcConnector(settings())
    pending = started(connector).pending
    token = id_token(pending, aud=[CLIENT, "other"], azp=CLIENT, auth_time=None)
    result = connector.validate_id_token(token, pending)
    assert result.auth_time == datetime.fromtimestamp(jwt.decode(token, UPSTREAM_KEY).claims["iat"], UTC)


class _TokenEndpoint(requests.adapters.BaseAdapter):
    """Answers the token request in process, checking the PKCE verifier was sent."""

    def __init__(self, holder, body_for):
        super().__init__()
        self.holder, self.body_for = holder, body_for

    def send(self, request, **kwargs):
        pending = self.holder["pending"]
        form = parse_qs(request.body if isinstance(request.body, str) else request.body.decode())
        response = requests.Response()
        response.request = request
        response.headers["Content-Type"] = "application/json"
        ok = form.get("code_verifier") == [pending.code_verifier] and form.get("code") == ["c0de"]
        response.status_code = 200 if ok else 400
        body = self.body_for(pending) if ok else {"error": "invalid_grant"}
        response._content = json.dumps(body).encode()
        return response

    def close(self):
        pass


def _factory(body_for):
    holder = {}

    def factory(s):
        session = _default_session(s)
        session.mount("https://", _TokenEndpoint(holder, body_for))
        return session

    return holder, factory


def test_finish_exchanges_code_with_pkce_and_validates_id_token():
    holder, factory = _factory(
        lambda p: {"access_token": "at", "token_type": "Bearer", "id_token": id_token(p)}
    )
    connector = OidcConnector(settings(), session_factory=factory)
    pending = started(connector).pending
    holder["pending"] = pending
    result = connector.finish(
        EidResponse({"state": pending.relay_state, "code": "c0de", "iss": ISSUER}, pending)
    )
    assert result.level is Level.HIGH


@pytest.mark.parametrize(
    ("params", "body", "error"),
    [
        pytest.param(
            {"state": "forged", "code": "c0de"}, None, errors.StateMismatch, id="fail/state-rfc6749-10.12"
        ),
        pytest.param(
            {"error": "access_denied"}, None, errors.UpstreamRefused, id="fail/cancelled-rfc6749-4.1.2.1"
        ),
        pytest.param(
            {"code": "c0de", "iss": "https://mix-up.example"},
            None,
            errors.IssuerMismatch,
            id="fail/mix-up-rfc9207",
        ),
        pytest.param({}, None, errors.MalformedResponse, id="fail/no-code"),
        pytest.param({"code": "wrong"}, None, errors.TokenRequestFailed, id="fail/token-endpoint-refuses"),
        pytest.param(
            {"code": "c0de"},
            {"access_token": "at", "token_type": "Bearer"},
            errors.MalformedResponse,
            id="fail/no-id-token",
        ),
    ],
)
def test_finish_refusals(params, body, error):
    holder, factory = _factory(
        lambda p: body or {"access_token": "at", "token_type": "Bearer", "id_token": id_token(p)}
    )
    connector = OidcConnector(settings(), session_factory=factory)
    pending = started(connector).pending
    holder["pending"] = pending
    with pytest.raises(error):
        connector.finish(EidResponse({"state": pending.relay_state, **params}, pending))


def test_default_session_is_an_authlib_oauth2_session_with_s256():
    session = _default_session(settings())
    assert isinstance(session, OAuth2Session)
    assert session.code_challenge_method == "S256"
