"""Pushed authorization requests (RFC 9126): the browser carries only client_id and request_uri."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import func, select, update

from db import transaction, utcnow
from idp.models import Grant, PushedRequest
from tests.idp.conftest import Browser, Idp, pkce_pair, query
from tests.idp.dpop_client import DpopKey

PASSWORD = "correct horse battery staple"
REDIRECT = "http://127.0.0.1:9/cb"


@pytest.fixture
def svc(idp: Idp) -> tuple[Idp, str, str]:
    cid, secret = idp.add_client(name="Bauamt", redirect_uris=[REDIRECT])
    idp.add_user("eve@example.org")
    return idp, cid, secret or ""


def _params(cid: str, challenge: str, **over: str) -> dict[str, str]:
    p = {
        "response_type": "code",
        "client_id": cid,
        "redirect_uri": REDIRECT,
        "scope": "openid email",
        "state": "pushed-state",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    p.update(over)
    return {k: v for k, v in p.items() if v != ""}


def push(idp: Idp, cid: str, secret: str, params: dict[str, str]) -> requests.Response:
    return requests.post(f"{idp.url}/par", auth=(cid, secret), data=params, timeout=10)


def _count(idp: Idp, model: Any) -> int:
    with transaction(idp.sessions()) as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def _through_login(b: Browser, r: requests.Response) -> requests.Response:
    r = b.follow(r)
    if 'name="password"' in r.text:
        r = b.login("eve@example.org", PASSWORD, r)
    if r.status_code == 200 and 'name="decision"' in r.text:
        r = b.consent(r)
    return r


def test_pushed_request_completes_the_code_flow_rfc9126_2_and_4(svc: tuple[Idp, str, str]) -> None:
    idp, cid, secret = svc
    meta = requests.get(f"{idp.url}/.well-known/openid-configuration", timeout=10).json()
    assert meta["pushed_authorization_request_endpoint"] == f"{idp.url}/par"  # RFC 9126 §5
    verifier, challenge = pkce_pair()
    r = push(idp, cid, secret, _params(cid, challenge))
    assert r.status_code == 201 and r.headers["Cache-Control"] == "no-store"  # §2.2
    body = r.json()
    assert body["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
    assert 5 <= body["expires_in"] <= 600

    b = Browser(idp)
    # Parameters in the URL besides client_id and request_uri are ignored (§4): the pushed
    # redirect URI and state win over what the browser was given.
    url = f"{idp.url}/authorize"
    q = {"client_id": cid, "request_uri": body["request_uri"], "state": "tampered", "scope": "openid"}
    done = _through_login(b, b.get(url, params=q))
    assert done.status_code == 302 and done.headers["Location"].startswith(REDIRECT + "?")
    answer = query(done.headers["Location"])
    assert answer["state"] == "pushed-state" and answer["iss"] == idp.url
    tok = requests.post(
        f"{idp.url}/token",
        auth=(cid, secret),
        data={
            "grant_type": "authorization_code",
            "code": answer["code"],
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        timeout=10,
    )
    assert tok.status_code == 200 and tok.json()["scope"] == "openid email", tok.text

    # One-time use (§4): once a code was issued from it, the request_uri is spent.
    grants = _count(idp, Grant)
    again = b.get(url, params={"client_id": cid, "request_uri": body["request_uri"]})
    assert again.status_code == 400 and "invalid_request_uri" in again.text
    assert _count(idp, Grant) == grants


def test_request_uri_of_another_client_or_expired_is_refused_rfc9126_4(svc: tuple[Idp, str, str]) -> None:
    idp, cid, secret = svc
    other, _ = idp.add_client(name="Other", redirect_uris=[REDIRECT])
    _v, challenge = pkce_pair()
    request_uri = push(idp, cid, secret, _params(cid, challenge)).json()["request_uri"]
    b = Browser(idp)
    r = b.get(f"{idp.url}/authorize", params={"client_id": other, "request_uri": request_uri})
    assert r.status_code == 400 and "invalid_request_uri" in r.text
    for forged in ("urn:ietf:params:oauth:request_uri:" + "A" * 43, "https://evil.example/req"):
        r = b.get(f"{idp.url}/authorize", params={"client_id": cid, "request_uri": forged})
        assert r.status_code == 400 and "invalid_request_uri" in r.text
    with transaction(idp.sessions()) as s:
        s.execute(update(PushedRequest).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    r = b.get(f"{idp.url}/authorize", params={"client_id": cid, "request_uri": request_uri})
    assert r.status_code == 400 and "invalid_request_uri" in r.text
    assert _count(idp, Grant) == 0


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"redirect_uri": "https://evil.example/cb"}, 400, "invalid_request"),
        ({"code_challenge_method": ""}, 400, "invalid_request"),
        ({"code_challenge_method": "plain"}, 400, "invalid_request"),
        ({"response_type": "token"}, 400, "unsupported_response_type"),
        ({"request_uri": "urn:ietf:params:oauth:request_uri:x"}, 400, "invalid_request"),
        ({"claims": "{not json"}, 400, "invalid_request"),
        ({"max_age": "-1"}, 400, "invalid_request"),
    ],
)
def test_pushed_request_is_validated_like_an_authorization_request_rfc9126_2_1(
    svc: tuple[Idp, str, str], change: dict[str, str], status: int, error: str
) -> None:
    idp, cid, secret = svc
    _v, challenge = pkce_pair()
    r = push(idp, cid, secret, _params(cid, challenge, **change))
    assert r.status_code == status and r.json()["error"] == error, r.text
    assert r.headers["Cache-Control"] == "no-store"
    assert _count(idp, PushedRequest) == 0


def test_push_needs_client_authentication_rfc9126_2_1(svc: tuple[Idp, str, str]) -> None:
    idp, cid, _secret = svc
    _v, challenge = pkce_pair()
    r = push(idp, cid, "wrong secret", _params(cid, challenge))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert r.headers["WWW-Authenticate"].startswith("Basic")  # RFC 6749 §5.2, as at /token
    other, other_secret = idp.add_client(name="Other", redirect_uris=[REDIRECT])
    r = push(idp, other, other_secret or "", _params(cid, challenge))  # pushes for another client
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert _count(idp, PushedRequest) == 0


def test_client_that_requires_par_refuses_unpushed_requests_rfc9126_6(idp: Idp) -> None:
    cid, secret = idp.add_client(name="Kasse", redirect_uris=[REDIRECT], require_par=True)
    idp.add_user("eve@example.org")
    _v, challenge = pkce_pair()
    b = Browser(idp)
    r = b.get(f"{idp.url}/authorize", params=_params(cid, challenge))
    assert r.status_code == 302 and query(r.headers["Location"])["error"] == "invalid_request"
    request_uri = push(idp, cid, secret or "", _params(cid, challenge)).json()["request_uri"]
    done = _through_login(
        b, b.get(f"{idp.url}/authorize", params={"client_id": cid, "request_uri": request_uri})
    )
    assert done.status_code == 302 and "code" in query(done.headers["Location"])


def _push_with_proof(
    idp: Idp, cid: str, secret: str, params: dict[str, str], key: DpopKey
) -> requests.Response:
    def once() -> requests.Response:
        proof = key.proof("POST", f"{idp.url}/par")
        return requests.post(
            f"{idp.url}/par", auth=(cid, secret), data=params, headers={"DPoP": proof}, timeout=10
        )

    r = once()
    if r.status_code == 400 and r.json()["error"] == "use_dpop_nonce":  # RFC 9449 §8
        key.nonce = r.headers["DPoP-Nonce"]
        r = once()
    return r


def _code_token(idp: Idp, cid: str, secret: str, code: str, verifier: str, key: DpopKey) -> requests.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    headers = {"DPoP": key.proof("POST", f"{idp.url}/token")}
    r = requests.post(f"{idp.url}/token", auth=(cid, secret), data=data, headers=headers, timeout=10)
    if r.status_code == 400 and r.json()["error"] == "use_dpop_nonce":
        key.nonce = r.headers["DPoP-Nonce"]
        headers = {"DPoP": key.proof("POST", f"{idp.url}/token")}
        r = requests.post(f"{idp.url}/token", auth=(cid, secret), data=data, headers=headers, timeout=10)
    return r


def test_a_dpop_proof_at_par_binds_the_code_to_its_key_rfc9449_10_1(svc: tuple[Idp, str, str]) -> None:
    idp, cid, secret = svc
    key, other = DpopKey(), DpopKey()
    verifier, challenge = pkce_pair()
    pushed = _push_with_proof(idp, cid, secret, _params(cid, challenge), key)
    assert pushed.status_code == 201, pushed.text
    b = Browser(idp)
    q = {"client_id": cid, "request_uri": pushed.json()["request_uri"]}
    done = _through_login(b, b.get(f"{idp.url}/authorize", params=q))
    code = query(done.headers["Location"])["code"]
    refused = _code_token(idp, cid, secret, code, verifier, other)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    tok = _code_token(idp, cid, secret, code, verifier, key)
    assert tok.status_code == 200 and tok.json()["token_type"] == "DPoP", tok.text


def test_par_refuses_a_proof_for_another_key_or_url_rfc9449_10_1(svc: tuple[Idp, str, str]) -> None:
    idp, cid, secret = svc
    key, other = DpopKey(), DpopKey()
    _v, challenge = pkce_pair()
    r = _push_with_proof(idp, cid, secret, _params(cid, challenge, dpop_jkt=other.jkt), key)
    assert r.status_code == 400 and r.json()["error"] == "invalid_dpop_proof"
    wrong_url = key.proof("POST", f"{idp.url}/token")
    r = requests.post(
        f"{idp.url}/par",
        auth=(cid, secret),
        data=_params(cid, challenge),
        headers={"DPoP": wrong_url},
        timeout=10,
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_dpop_proof"
    assert _count(idp, PushedRequest) == 0


def test_private_key_jwt_may_name_the_par_endpoint_as_audience_rfc9126_2(idp: Idp) -> None:
    key = ECKey.generate_key("P-256", private=True, parameters={"kid": "k1"})
    cid, _ = idp.add_client(
        name="Register",
        redirect_uris=[REDIRECT],
        auth_method="private_key_jwt",
        jwks={"keys": [key.as_dict(private=False) | {"kid": "k1"}]},
    )
    now = int(time.time())
    claims = {"iss": cid, "sub": cid, "aud": f"{idp.url}/par", "iat": now, "exp": now + 60, "jti": "par-once"}
    _v, challenge = pkce_pair()
    data = _params(cid, challenge) | {
        "client_assertion": jwt.encode({"alg": "ES256", "kid": "k1"}, claims, key),
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
    r = requests.post(f"{idp.url}/par", data=data, timeout=10)
    assert r.status_code == 201, r.text


def test_pushed_requests_stay_small_and_unused_ones_are_purged_when_they_expire(
    svc: tuple[Idp, str, str],
) -> None:
    """A public client's id is no secret: anyone can push. What is stored stays small, and a
    request nobody used goes once its 90 s are over, not half an hour later."""
    import datetime as dt

    from db import transaction, utcnow
    from idp.oauth import par

    idp, cid, secret = svc
    _v, challenge = pkce_pair()
    padded = _params(cid, challenge) | {f"x{i}": "y" * 2000 for i in range(400)}
    r = push(idp, cid, secret, padded)
    assert r.status_code == 400 and _count(idp, PushedRequest) == 0
    assert push(idp, cid, secret, _params(cid, challenge)).status_code == 201
    with transaction(idp.sessions()) as s:
        par.purge(s, utcnow() + dt.timedelta(seconds=91))
    assert _count(idp, PushedRequest) == 0
