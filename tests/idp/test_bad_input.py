"""Hostile input: each answered by the right RFC 6749 / OIDC error, with no state change."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from idp.models import AuthorizationCode, Consent, Grant, LoginSession, RefreshToken
from tests.idp.conftest import Browser, Idp, csrf, pkce_pair, query

PASSWORD = "correct horse battery staple"
REDIRECT = "http://127.0.0.1:9/cb"


def counts(idp: Idp) -> dict[str, int]:
    with idp.sessions()() as s:
        return {
            m.__tablename__: s.execute(select(func.count()).select_from(m)).scalar_one()
            for m in (Grant, AuthorizationCode, RefreshToken, Consent)
        }


@pytest.fixture
def setup(idp: Idp) -> tuple[Idp, str, str, Browser]:
    cid, secret = idp.add_client(
        name="Svc", redirect_uris=[REDIRECT], post_logout_redirect_uris=["http://127.0.0.1:9/bye"]
    )
    idp.add_user("eve@example.org")
    return idp, cid, secret or "", Browser(idp)


def authorize_params(cid: str, challenge: str, **over: str) -> dict[str, str]:
    p = {
        "response_type": "code",
        "client_id": cid,
        "redirect_uri": REDIRECT,
        "scope": "openid email",
        "state": "st",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    p.update(over)
    return {k: v for k, v in p.items() if v != ""}


def get_code(idp: Idp, cid: str, browser: Browser, challenge: str) -> str:
    r = browser.follow(browser.get(f"{idp.url}/authorize", params=authorize_params(cid, challenge)))
    if 'name="password"' in r.text:
        r = browser.login("eve@example.org", PASSWORD, r)
    if r.status_code == 200 and "decision" in r.text:
        r = browser.consent(r)
    assert r.status_code == 302, r.text
    return query(r.headers["Location"])["code"]


def token(idp: Idp, cid: str, secret: str, **data: str) -> requests.Response:
    return requests.post(
        f"{idp.url}/token",
        auth=(cid, secret),
        timeout=10,
        data={"grant_type": "authorization_code", "redirect_uri": REDIRECT, **data},
    )


@pytest.mark.parametrize(
    "override, why",
    [
        ({"client_id": "no-such-client"}, "unknown client"),
        ({"redirect_uri": "http://127.0.0.1:9/cb/"}, "redirect URI with a trailing slash"),
        ({"redirect_uri": "http://127.0.0.1:9/cb?x=1"}, "redirect URI with extra query"),
        ({"redirect_uri": "https://evil.example/cb"}, "foreign redirect URI"),
    ],
)
def test_unverifiable_client_or_redirect_gets_a_page_not_a_redirect_rfc6749_4_1_2_1(
    setup: Any, override: dict[str, str], why: str
) -> None:
    idp, cid, _secret, browser = setup
    before = counts(idp)
    _v, ch = pkce_pair()
    r = browser.get(f"{idp.url}/authorize", params=authorize_params(cid, ch, **override))
    assert r.status_code == 400, why
    assert "Location" not in r.headers
    assert counts(idp) == before


@pytest.mark.parametrize(
    "override, error",
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": ""}, "invalid_request"),  # defaults to plain: refused
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "openid", "prompt": "none login"}, "invalid_request"),
        ({"max_age": "-5"}, "invalid_request"),
        ({"max_age": "\u00b2"}, "invalid_request"),  # a digit to str.isdigit, not to int()
        ({"claims": "[" * 2000}, "invalid_request"),  # nested too deep for the JSON parser
    ],
)
def test_bad_authorization_parameters_are_redirected_as_errors_with_iss(
    setup: Any, override: dict[str, str], error: str
) -> None:
    idp, cid, _secret, browser = setup
    _v, ch = pkce_pair()
    # log in first so that parameter errors are not masked by the login page
    get_code(idp, cid, browser, ch)
    before = counts(idp)
    r = browser.get(f"{idp.url}/authorize", params=authorize_params(cid, ch, **override))
    assert r.status_code == 302, r.text
    q = query(r.headers["Location"])
    assert q["error"] == error and q["state"] == "st"
    assert counts(idp) == before


def test_public_client_without_pkce_is_refused_rfc9700_2_1_1(idp: Idp) -> None:
    cid, _ = idp.add_client(name="App", redirect_uris=[REDIRECT], auth_method="none")
    browser = Browser(idp)
    r = browser.get(f"{idp.url}/authorize", params=authorize_params(cid, "", code_challenge_method=""))
    assert r.status_code == 302 and query(r.headers["Location"])["error"] == "invalid_request"


def test_wrong_code_verifier_is_invalid_grant_rfc7636_4_6(setup: Any) -> None:
    idp, cid, secret, browser = setup
    verifier, ch = pkce_pair()
    code = get_code(idp, cid, browser, ch)
    before = counts(idp)
    r = token(idp, cid, secret, code=code, code_verifier=pkce_pair()[0])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = token(idp, cid, secret, code=code)  # missing verifier
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert counts(idp) == before
    assert token(idp, cid, secret, code=code, code_verifier=verifier).status_code == 200


def test_reused_code_is_refused_and_revokes_its_tokens_rfc6749_4_1_2(setup: Any) -> None:
    idp, cid, secret, browser = setup
    verifier, ch = pkce_pair()
    code = get_code(idp, cid, browser, ch)
    first = token(idp, cid, secret, code=code, code_verifier=verifier)
    assert first.status_code == 200
    second = token(idp, cid, secret, code=code, code_verifier=verifier)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    intro = requests.post(
        f"{idp.url}/introspect", auth=(cid, secret), timeout=10, data={"token": first.json()["access_token"]}
    ).json()
    assert intro == {"active": False}
    r = requests.post(
        f"{idp.url}/token",
        auth=(cid, secret),
        timeout=10,
        data={"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]},
    )
    assert r.json()["error"] == "invalid_grant"


def test_a_code_redeemed_by_a_concurrent_request_revokes_its_tokens_rfc6749_4_1_2(setup: Any) -> None:
    # The race the single-use UPDATE decides: between this request's lookup of the code and its
    # redemption, another request redeemed it. The loser must treat it as the replay it is.
    from authlib.oauth2.rfc6749.errors import InvalidGrantError

    from db import transaction, utcnow
    from idp import uow
    from idp.oauth.server import AuthorizationCodeGrant, CodeRecord

    idp, cid, _secret, browser = setup
    _v, ch = pkce_pair()
    get_code(idp, cid, browser, ch)
    with idp.sessions()() as s:  # what this request's lookup found: an unused code
        row = s.scalars(select(AuthorizationCode)).one()
        record = CodeRecord(row, s.get(Grant, row.grant_id))
    with transaction(idp.sessions()) as s:  # the concurrent redemption commits first
        s.get(AuthorizationCode, row.code_digest).used_at = utcnow()
    with idp.app.test_request_context():
        with pytest.raises(InvalidGrantError):
            AuthorizationCodeGrant.delete_authorization_code(None, record)
        uow.finish(False)
    with idp.sessions()() as s:
        assert s.get(Grant, record.grant.id).revoked_reason == "authorization code reused"


def test_expired_code_is_invalid_grant(idp_factory: Any) -> None:
    idp = idp_factory(code_lifetime_seconds=1)
    cid, secret = idp.add_client(name="Svc", redirect_uris=[REDIRECT])
    idp.add_user("eve@example.org")
    verifier, ch = pkce_pair()
    code = get_code(idp, cid, Browser(idp), ch)
    time.sleep(1.5)
    r = token(idp, cid, secret or "", code=code, code_verifier=verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_code_of_another_client_or_redirect_is_refused(setup: Any) -> None:
    idp, cid, secret, browser = setup
    other, other_secret = idp.add_client(name="Other", redirect_uris=[REDIRECT])
    verifier, ch = pkce_pair()
    code = get_code(idp, cid, browser, ch)
    r = token(idp, other, other_secret or "", code=code, code_verifier=verifier)
    assert r.json()["error"] == "invalid_grant"
    r = requests.post(
        f"{idp.url}/token",
        auth=(cid, secret),
        timeout=10,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": "http://127.0.0.1:9/other",
        },
    )
    assert r.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("auth", [("wrong", "secret"), None])
def test_wrong_client_secret_is_invalid_client_rfc6749_5_2(setup: Any, auth: Any) -> None:
    idp, cid, _secret, _browser = setup
    creds = (cid, "not-the-secret") if auth else None
    r = requests.post(
        f"{idp.url}/token",
        auth=creds,
        timeout=10,
        data={"grant_type": "authorization_code", "code": "x", "client_id": cid},
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def _b64(d: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def test_tampered_and_alg_none_tokens_are_refused_rfc8725_3_1(setup: Any) -> None:
    idp, cid, secret, browser = setup
    verifier, ch = pkce_pair()
    code = get_code(idp, cid, browser, ch)
    at = token(idp, cid, secret, code=code, code_verifier=verifier).json()["access_token"]
    header, payload, sig = at.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "openid email payment"
    tampered = f"{header}.{_b64(claims)}.{sig}"
    none_alg = f"{_b64({'alg': 'none', 'typ': 'at+jwt'})}.{_b64(claims)}."
    for bad in (tampered, none_alg, at[:-4] + "AAAA", "garbage", "a.b.c"):
        r = requests.get(f"{idp.url}/userinfo", headers={"Authorization": f"Bearer {bad}"}, timeout=10)
        assert r.status_code == 401, bad
        intro = requests.post(
            f"{idp.url}/introspect", auth=(cid, secret), timeout=10, data={"token": bad}
        ).json()
        assert intro == {"active": False}
    # the genuine token still works
    assert (
        requests.get(f"{idp.url}/userinfo", headers={"Authorization": f"Bearer {at}"}, timeout=10).status_code
        == 200
    )


def test_oversized_parameters_are_invalid_request(setup: Any) -> None:
    idp, cid, secret, browser = setup
    _v, ch = pkce_pair()
    r = browser.get(f"{idp.url}/authorize", params=authorize_params(cid, ch, state="s" * 5000))
    assert r.status_code in (302, 400)
    if r.status_code == 302:
        assert query(r.headers["Location"])["error"] == "invalid_request"
    r = requests.post(
        f"{idp.url}/token",
        auth=(cid, secret),
        timeout=10,
        data={"grant_type": "authorization_code", "code": "c" * 10000},
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = requests.post(
        f"{idp.url}/token",
        auth=(cid, secret),
        timeout=10,
        data={"grant_type": "refresh_token", "refresh_token": "r" * 3 * 1024 * 1024},
    )
    assert r.status_code == 413
    assert r.json()["error"] == "invalid_request"


def test_token_endpoint_accepts_only_post_rfc6749_3_2(setup: Any) -> None:
    idp, _cid, _secret, _browser = setup
    r = requests.get(f"{idp.url}/token", params={"grant_type": "client_credentials"}, timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    assert r.json()["error"] == "invalid_request"
    assert r.headers["Cache-Control"] == "no-store"


def test_token_responses_carry_the_security_headers_and_no_store_rfc6749_5_1(setup: Any) -> None:
    idp, cid, secret, _browser = setup
    before = counts(idp)
    for data in ({"grant_type": "authorization_code", "code": "nope"}, {"grant_type": "password"}):
        r = requests.post(f"{idp.url}/token", auth=(cid, secret), data=data, timeout=10)
        assert r.status_code == 400
        assert r.headers["Cache-Control"] == "no-store" and r.headers["Pragma"] == "no-cache"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert counts(idp) == before


def test_login_without_csrf_token_changes_nothing(setup: Any) -> None:
    idp, _cid, _secret, browser = setup
    page = browser.get(f"{idp.url}/login")
    with idp.sessions()() as s:
        before = s.execute(select(func.count()).select_from(LoginSession)).scalar_one()
    for data in (
        {"email": "eve@example.org", "password": PASSWORD},
        {"email": "eve@example.org", "password": PASSWORD, "csrf_token": "forged"},
    ):
        r = browser.post(f"{idp.url}/login", data)
        assert r.status_code == 400 and "Set-Cookie" not in r.headers
    with idp.sessions()() as s:
        assert s.execute(select(func.count()).select_from(LoginSession)).scalar_one() == before
    # a token from another browser's session is refused too
    other = Browser(idp)
    other_token = csrf(other.get(f"{idp.url}/login").text)
    r = browser.post(
        f"{idp.url}/login", {"email": "eve@example.org", "password": PASSWORD, "csrf_token": other_token}
    )
    assert r.status_code == 400
    assert csrf(page.text)


def test_logout_never_redirects_to_unregistered_uri_rp_initiated_3(setup: Any) -> None:
    idp, cid, secret, browser = setup
    verifier, ch = pkce_pair()
    code = get_code(idp, cid, browser, ch)
    id_token = token(idp, cid, secret, code=code, code_verifier=verifier).json()["id_token"]
    # without id_token_hint: a confirmation page, never a redirect
    r = browser.get(
        f"{idp.url}/logout", params={"client_id": cid, "post_logout_redirect_uri": "http://127.0.0.1:9/bye"}
    )
    assert r.status_code == 200 and "csrf_token" in r.text
    # with a hint but an unregistered URI: logged out, but no redirect
    r = browser.get(
        f"{idp.url}/logout",
        params={"id_token_hint": id_token, "post_logout_redirect_uri": "https://evil.example/"},
    )
    assert r.status_code == 200 and "Location" not in r.headers
    # a forged id_token_hint is refused
    r = Browser(idp).get(
        f"{idp.url}/logout",
        params={
            "id_token_hint": id_token[:-5] + "AAAAA",
            "post_logout_redirect_uri": "http://127.0.0.1:9/bye",
        },
    )
    assert r.status_code == 400 and "Location" not in r.headers


def test_private_key_jwt_client_authentication_and_replay_rfc7523(idp: Idp) -> None:
    from joserfc import jwt
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256", private=True, parameters={"kid": "k1"})
    cid, _ = idp.add_client(
        name="Registry",
        grant_types=["client_credentials"],
        scope="x",
        auth_method="private_key_jwt",
        jwks={"keys": [key.as_dict(private=False) | {"kid": "k1"}]},
    )
    now = int(time.time())
    assertion = jwt.encode(
        {"alg": "ES256", "kid": "k1"},
        {"iss": cid, "sub": cid, "aud": f"{idp.url}/token", "iat": now, "exp": now + 60, "jti": "once-only"},
        key,
    )
    data = {
        "grant_type": "client_credentials",
        "client_assertion": assertion,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
    assert requests.post(f"{idp.url}/token", data=data, timeout=10).status_code == 200
    r = requests.post(f"{idp.url}/token", data=data, timeout=10)  # replayed jti
    # RFC 6749 §5.2: 401 is required only with HTTP authentication; else 400 is right.
    assert r.status_code in (400, 401) and r.json()["error"] == "invalid_client"
    other = ECKey.generate_key("P-256", private=True)
    forged = jwt.encode(
        {"alg": "ES256", "kid": "k1"},
        {"iss": cid, "sub": cid, "aud": f"{idp.url}/token", "iat": now, "exp": now + 60, "jti": "another"},
        other,
    )
    r = requests.post(f"{idp.url}/token", data=data | {"client_assertion": forged}, timeout=10)
    assert r.status_code in (400, 401) and r.json()["error"] == "invalid_client"


@pytest.mark.parametrize("alg", ["Ed25519", "EdDSA"])  # RFC 9864's name, and the older one
def test_private_key_jwt_with_eddsa_as_discovery_advertises_rfc7523(idp: Idp, alg: str) -> None:
    from joserfc import jwt
    from joserfc.jwk import OKPKey

    key = OKPKey.generate_key("Ed25519", private=True)
    cid, _ = idp.add_client(
        name="Registry",
        grant_types=["client_credentials"],
        scope="x",
        auth_method="private_key_jwt",
        jwks={"keys": [key.as_dict(private=False) | {"kid": "e1"}]},
    )
    now = int(time.time())
    claims = {"iss": cid, "sub": cid, "aud": idp.url, "iat": now, "exp": now + 60, "jti": f"ed-{alg}"}
    assertion = jwt.encode({"alg": alg, "kid": "e1"}, claims, key, algorithms=[alg])
    data = {
        "grant_type": "client_credentials",
        "client_assertion": assertion,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
    r = requests.post(f"{idp.url}/token", data=data, timeout=10)
    assert r.status_code == 200, r.text


class _AssertingClient:
    """A client_credentials client with private_key_jwt (ES256, kid k1) that asks for tokens with
    assertions of chosen claims (RFC 7523 §2.2)."""

    def __init__(self, idp: Idp) -> None:
        from joserfc.jwk import ECKey

        self.idp, self.key = idp, ECKey.generate_key("P-256", private=True)
        self.cid, _ = idp.add_client(
            name="Registry",
            grant_types=["client_credentials"],
            scope="x",
            auth_method="private_key_jwt",
            jwks={"keys": [self.key.as_dict(private=False) | {"kid": "k1"}]},
        )

    def token(self, jti: str, **over: Any) -> tuple[int, str]:
        from joserfc import jwt

        now = int(time.time())
        claims = {"iss": self.cid, "sub": self.cid, "aud": self.idp.url, "iat": now, "exp": now + 60}
        data = {
            "grant_type": "client_credentials",
            "client_assertion": jwt.encode(
                {"alg": "ES256", "kid": "k1"}, claims | {"jti": jti} | over, self.key
            ),
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        }
        r = requests.post(f"{self.idp.url}/token", data=data, timeout=10)
        return r.status_code, r.json().get("error", "")


def test_private_key_jwt_audience_is_the_issuer_alone_when_configured_rfc7523bis(idp_factory: Any) -> None:
    # audience injection (draft-ietf-oauth-rfc7523bis §4): an assertion a client made for an
    # endpoint URL another server told it could be replayed here; with the switch on, only the
    # issuer identifier, as one string, is an audience
    idp = idp_factory(client_assertion_issuer_audience_only=True)
    client = _AssertingClient(idp)
    for n, aud in enumerate((f"{idp.url}/token", f"{idp.url}/par", [idp.url, f"{idp.url}/token"])):
        status, error = client.token(f"refused-{n}", aud=aud)
        assert status in (400, 401) and error == "invalid_client", aud  # RFC 6749 §5.2
    assert client.token("accepted")[0] == 200


@pytest.mark.parametrize("lifetime", [2 * 3600, 10**400])
def test_a_client_assertion_expiring_unreasonably_late_is_refused_rfc7523_3(idp: Idp, lifetime: int) -> None:
    client = _AssertingClient(idp)
    status, error = client.token("late", exp=int(time.time()) + lifetime)
    assert status in (400, 401) and error == "invalid_client"  # not a 500
    assert client.token("in-time", exp=int(time.time()) + 1800)[0] == 200


def test_refresh_token_of_another_client_is_refused(setup: Any) -> None:
    idp, cid, secret, browser = setup
    other, other_secret = idp.add_client(name="Other", redirect_uris=[REDIRECT])
    verifier, ch = pkce_pair()
    code = get_code(idp, cid, browser, ch)
    rt = token(idp, cid, secret, code=code, code_verifier=verifier).json()["refresh_token"]
    r = requests.post(
        f"{idp.url}/token",
        auth=(other, other_secret),
        timeout=10,
        data={"grant_type": "refresh_token", "refresh_token": rt},
    )
    assert r.json()["error"] == "invalid_grant"
    # and the owner can still use it: the failed attempt changed nothing
    r = requests.post(
        f"{idp.url}/token",
        auth=(cid, secret),
        timeout=10,
        data={"grant_type": "refresh_token", "refresh_token": rt},
    )
    assert r.status_code == 200


def test_hostile_values_get_protocol_errors_not_a_server_error(setup: Any) -> None:
    """Non-ASCII where a secret is compared, digits int() refuses, a port out of range: each a
    4xx with its protocol's error, never a 500 (constant-time comparison of text included)."""
    from tests.idp.dpop_client import DpopKey

    idp, cid, secret, browser = setup
    _v, ch = pkce_pair()
    pushed = authorize_params(cid, ch)
    del pushed["client_id"]
    for hostile in ({"max_age": "\u00b2"}, {"claims": "[" * 2000}):  # int() refuses; JSON too deep
        r = requests.post(f"{idp.url}/par", auth=(cid, secret), data={**pushed, **hostile}, timeout=10)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"  # RFC 9126 §2.3
    uri = requests.post(f"{idp.url}/par", auth=(cid, secret), data=pushed, timeout=10).json()["request_uri"]
    r = browser.get(f"{idp.url}/authorize", params={"client_id": "\u00e9", "request_uri": uri})
    assert r.status_code == 400 and "Location" not in r.headers  # no such client: a page
    r = requests.post(
        f"{idp.url}/token",
        auth=(cid, secret),
        headers={"DPoP": DpopKey().proof("POST", "https://login.example.org:99999/token")},
        data={"grant_type": "client_credentials"},
        timeout=10,
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_dpop_proof"  # RFC 9449 §5
    before = counts(idp)
    for path in ("/login", "/register", "/forgot"):
        r = browser.post(f"{idp.url}{path}", {"csrf_token": "\u00e9" * 40, "email": "eve@example.org"})
        assert r.status_code == 400, path  # the "form has expired" page (a CSRF refusal)
    assert counts(idp) == before


def test_what_discovery_says_is_not_supported_is_refused_not_ignored_oidc_core_6(setup: Any) -> None:
    """A request object or a response_mode other than query would otherwise be dropped silently:
    the login goes through without the request object's nonce or acr, or in another mode."""
    idp, cid, _secret, browser = setup
    _v, ch = pkce_pair()
    get_code(idp, cid, browser, ch)  # logged in: errors are not masked by the login page
    for extra, error in (
        ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
        ({"response_mode": "form_post"}, "invalid_request"),
    ):
        r = browser.get(f"{idp.url}/authorize", params=authorize_params(cid, ch, **extra))
        assert r.status_code == 302 and query(r.headers["Location"])["error"] == error, extra
    meta = requests.get(f"{idp.url}/.well-known/openid-configuration", timeout=10).json()
    assert meta["request_parameter_supported"] is False and meta["response_modes_supported"] == ["query"]
    # RFC 8414 §2: with private_key_jwt listed, the signing algorithms are named too
    assert meta["introspection_endpoint_auth_signing_alg_values_supported"]
    assert meta["revocation_endpoint_auth_signing_alg_values_supported"]


def test_an_unknown_token_type_hint_is_ignored_rfc7662_2_1(setup: Any) -> None:
    idp, cid, secret, _browser = setup
    for path in ("/introspect", "/revoke"):
        r = requests.post(
            f"{idp.url}{path}",
            auth=(cid, secret),
            data={"token": "x" * 40, "token_type_hint": "id_token"},
            timeout=10,
        )
        assert r.status_code == 200, (path, r.text)
