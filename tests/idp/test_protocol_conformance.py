"""Conformance details found by an outside test (issue 18 item 8): POSTed authorization
requests, redirect_uri in OpenID requests, client authentication, client-credentials scope,
discovery and RFC 8414 metadata."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import select

from db import transaction
from idp.models import Consent
from tests.idp.conftest import Browser, Idp, pkce_pair, query

REDIRECT = "http://127.0.0.1:9/cb"
EMAIL = "post@example.org"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _authz(cid: str, **over: str) -> dict[str, str]:
    _verifier, challenge = pkce_pair()
    return {
        "response_type": "code",
        "client_id": cid,
        "redirect_uri": REDIRECT,
        "scope": "openid email",
        "state": "st",
        "nonce": "n",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **over,
    }


# ------------------------------------------------------------------- POST to /authorize


def test_an_authorization_request_sent_as_post_works_oidc_core_3_1_2_1(idp: Idp) -> None:
    cid, _ = idp.add_client(name="Svc", redirect_uris=[REDIRECT])
    idp.add_user(EMAIL)
    b = Browser(idp)
    posted = b.post(f"{idp.url}/authorize", data=_authz(cid))
    assert posted.status_code == 303, posted.text
    # the parameters stay out of the URL: the browser goes on with a reference only
    assert "code_challenge" not in posted.headers["Location"] and "request_uri" in posted.headers["Location"]
    page = b.login(EMAIL, "correct horse battery staple", b.follow(posted))
    done = b.consent(page)
    assert done.status_code == 302, done.text
    back = query(done.headers["Location"])
    assert done.headers["Location"].startswith(REDIRECT) and back["state"] == "st" and "code" in back


def test_a_posted_authorization_request_cannot_decide_consent_without_the_csrf_token(idp: Idp) -> None:
    cid, _ = idp.add_client(name="Svc", redirect_uris=[REDIRECT])
    idp.add_user(EMAIL)
    b = Browser(idp)
    page = b.login(
        EMAIL, "correct horse battery staple", b.follow(b.get(f"{idp.url}/authorize", params=_authz(cid)))
    )
    assert "decision" in page.text  # the consent page
    # a cross-site form posting "allow" without the session's CSRF token: consent is asked again
    r = b.follow(b.post(f"{idp.url}/authorize", data=_authz(cid) | {"decision": "allow"}))
    assert r.status_code == 200 and 'name="decision"' in r.text
    with transaction(idp.sessions()) as s:
        assert s.scalars(select(Consent)).all() == []


def test_a_posted_request_does_not_count_as_pushed_for_a_require_par_client_rfc9126_6(idp: Idp) -> None:
    cid, _ = idp.add_client(name="Kasse", redirect_uris=[REDIRECT], require_par=True)
    b = Browser(idp)
    r = b.follow(b.post(f"{idp.url}/authorize", data=_authz(cid)))
    assert r.status_code == 302 and query(r.headers["Location"])["error"] == "invalid_request"
    assert "push" in query(r.headers["Location"])["error_description"]


def test_a_posted_request_for_an_unknown_client_is_a_page_not_a_redirect(idp: Idp) -> None:
    r = Browser(idp).post(f"{idp.url}/authorize", data=_authz("nobody"))
    assert r.status_code == 400 and "Location" not in r.headers


# ------------------------------------------------------------------- redirect_uri


def test_redirect_uri_is_required_in_an_openid_request_even_with_one_registered_oidc_core_3_1_2_1(
    idp: Idp,
) -> None:
    cid, _ = idp.add_client(name="Svc", redirect_uris=[REDIRECT])
    params = _authz(cid)
    del params["redirect_uri"]
    r = Browser(idp).get(f"{idp.url}/authorize", params=params)
    # a page, never a redirect: no redirect URI was named (RFC 6749 §4.1.2.1)
    assert r.status_code == 400 and "Location" not in r.headers
    assert "redirect_uri is required" in r.text


def test_plain_oauth_request_may_omit_the_only_registered_redirect_uri_rfc6749_3_1_2_3(idp: Idp) -> None:
    cid, _ = idp.add_client(name="Svc", redirect_uris=[REDIRECT], scope="email")
    idp.add_user(EMAIL)
    params = _authz(cid, scope="email")
    del params["redirect_uri"]
    del params["nonce"]
    b = Browser(idp)
    page = b.login(
        EMAIL, "correct horse battery staple", b.follow(b.get(f"{idp.url}/authorize", params=params))
    )
    r = b.consent(page)
    assert r.status_code == 302 and r.headers["Location"].startswith(REDIRECT + "?")


# ------------------------------------------------------------------- client authentication


def _pkjwt_client(idp: Idp) -> tuple[str, ECKey]:
    key = ECKey.generate_key("P-256", private=True, parameters={"kid": "k1"})
    cid, _ = idp.add_client(
        name="Registry",
        grant_types=["client_credentials"],
        scope="x",
        auth_method="private_key_jwt",
        jwks={"keys": [key.as_dict(private=False) | {"kid": "k1"}]},
    )
    return cid, key


def _assertion(idp: Idp, cid: str, key: ECKey) -> str:
    now = int(time.time())
    claims = {
        "iss": cid,
        "sub": cid,
        "aud": f"{idp.url}/token",
        "iat": now,
        "exp": now + 60,
        "jti": str(now) + cid,
    }
    import secrets

    claims["jti"] = secrets.token_urlsafe(16)
    return jwt.encode({"alg": "ES256", "kid": "k1"}, claims, key)


def test_two_client_authentication_methods_at_once_are_refused_rfc6749_2_3(idp: Idp) -> None:
    cid, secret = idp.add_client(name="M2M", grant_types=["client_credentials"], scope="x")
    assert secret is not None
    both = requests.post(
        f"{idp.url}/token",
        auth=(cid, secret),
        data={"grant_type": "client_credentials", "client_id": cid, "client_secret": secret},
        timeout=10,
    )
    assert both.status_code == 400 and both.json()["error"] == "invalid_request", both.text
    pk_cid, key = _pkjwt_client(idp)
    assertion_and_secret = requests.post(
        f"{idp.url}/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": _assertion(idp, pk_cid, key),
            "client_secret": "whatever",
        },
        timeout=10,
    )
    assert (
        assertion_and_secret.status_code == 400 and assertion_and_secret.json()["error"] == "invalid_request"
    )
    # the same at the PAR endpoint, which authenticates clients the same way
    r = requests.post(
        f"{idp.url}/par", auth=(cid, secret), data=_authz(cid) | {"client_secret": secret}, timeout=10
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    # one method at a time still works
    ok = requests.post(
        f"{idp.url}/token", auth=(cid, secret), data={"grant_type": "client_credentials"}, timeout=10
    )
    assert ok.status_code == 200, ok.text


def test_a_client_id_other_than_the_assertions_subject_is_refused_rfc7521_4_2(idp: Idp) -> None:
    cid, key = _pkjwt_client(idp)
    other, _ = idp.add_client(name="Other", grant_types=["client_credentials"], scope="x")
    data = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE}
    r = requests.post(
        f"{idp.url}/token",
        data=data | {"client_assertion": _assertion(idp, cid, key), "client_id": other},
        timeout=10,
    )
    assert r.status_code in (400, 401) and r.json()["error"] == "invalid_client", r.text
    assert "subject" in r.json()["error_description"]
    same = requests.post(
        f"{idp.url}/token",
        data=data | {"client_assertion": _assertion(idp, cid, key), "client_id": cid},
        timeout=10,
    )
    assert same.status_code == 200, same.text


def test_basic_for_one_client_and_client_id_of_another_is_refused(idp: Idp) -> None:
    cid, secret = idp.add_client(name="M2M", grant_types=["client_credentials"], scope="x")
    other, _ = idp.add_client(name="Other", grant_types=["client_credentials"], scope="x")
    data = {"grant_type": "client_credentials"}
    r = requests.post(
        f"{idp.url}/token", auth=(cid, secret or ""), data=data | {"client_id": other}, timeout=10
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text  # as /par answers
    ok = requests.post(
        f"{idp.url}/token", auth=(cid, secret or ""), data=data | {"client_id": cid}, timeout=10
    )
    assert ok.status_code == 200, ok.text


def test_invalid_client_names_the_method_this_client_is_registered_for(idp: Idp) -> None:
    cid, _ = idp.add_client(name="M2M", grant_types=["client_credentials"], scope="x")
    r = requests.post(
        f"{idp.url}/token", auth=(cid, "wrong"), data={"grant_type": "client_credentials"}, timeout=10
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    text = r.json()["error_description"]
    assert "client_secret_basic" in text and "private_key_jwt" not in text and "none" not in text
    # a public client at the introspection endpoint, which accepts confidential clients only
    pub, _ = idp.add_client(name="App", redirect_uris=[REDIRECT], auth_method="none")
    r = requests.post(f"{idp.url}/introspect", data={"client_id": pub, "token": "t"}, timeout=10)
    assert r.json()["error"] == "invalid_client"
    assert (
        r.json()["error_description"]
        == "this client is registered for none, which this endpoint does not accept"
    )
    # an unknown client learns nothing of any method
    r = requests.post(f"{idp.url}/introspect", data={"client_id": "nobody", "token": "t"}, timeout=10)
    assert r.json()["error"] == "invalid_client" and "client_secret" not in r.json()["error_description"]


# ------------------------------------------------------------------- client credentials scope


@pytest.mark.parametrize("asked", ["y", "x y", "openid"])
def test_client_credentials_for_a_scope_not_allowed_is_invalid_scope_rfc6749_5_2(
    idp: Idp, asked: str
) -> None:
    cid, secret = idp.add_client(name="M2M", grant_types=["client_credentials"], scope="x")
    r = requests.post(
        f"{idp.url}/token",
        auth=(cid, secret or ""),
        data={"grant_type": "client_credentials", "scope": asked},
        timeout=10,
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope", r.text


def test_client_credentials_within_the_allowed_scope_returns_the_granted_scope_rfc6749_5_1(idp: Idp) -> None:
    cid, secret = idp.add_client(name="M2M", grant_types=["client_credentials"], scope="x z")
    r = requests.post(
        f"{idp.url}/token",
        auth=(cid, secret or ""),
        data={"grant_type": "client_credentials", "scope": "x"},
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["scope"] == "x", r.text


# ------------------------------------------------------------------- discovery


def test_discovery_omits_userinfo_signing_algs_instead_of_an_empty_list_oidc_discovery_3(idp: Idp) -> None:
    meta = requests.get(f"{idp.url}/.well-known/openid-configuration", timeout=10).json()
    assert "userinfo_signing_alg_values_supported" not in meta
    assert all(v != [] for v in meta.values())


def test_authorization_server_metadata_is_served_rfc8414_3(idp: Idp) -> None:
    r = requests.get(f"{idp.url}/.well-known/oauth-authorization-server", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    meta: dict[str, Any] = r.json()
    # RFC 8414 §3.3: issuer identical to the one the document is for
    assert meta["issuer"] == idp.url
    for required in ("authorization_endpoint", "token_endpoint", "response_types_supported"):
        assert required in meta  # RFC 8414 §2 REQUIRED
    oidc = requests.get(f"{idp.url}/.well-known/openid-configuration", timeout=10).json()
    assert meta == oidc  # one document: the two never disagree
    assert r.headers["Access-Control-Allow-Origin"] == "*" and "max-age" in r.headers["Cache-Control"]
