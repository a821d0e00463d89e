"""Authorization code + PKCE end to end over HTTP, with Authlib's own client as the RP."""

from __future__ import annotations

import time
from typing import Any

import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet

from idp.config import LEVEL_LOW
from tests.idp.conftest import Browser, Idp, Receiver, csrf, query

PASSWORD = "correct horse battery staple"


def _rp(
    idp: Idp, client_id: str, secret: str | None, redirect: str, scope: str = "openid email profile"
) -> OAuth2Session:
    return OAuth2Session(
        client_id,
        secret,
        scope=scope,
        redirect_uri=redirect,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic" if secret else "none",
    )


def login_and_get_code(
    idp: Idp, browser: Browser, rp: OAuth2Session, email: str, **params: str
) -> tuple[str, str, str, str]:
    meta = requests.get(f"{idp.url}/.well-known/openid-configuration", timeout=10).json()
    import secrets as _s

    verifier = _s.token_urlsafe(48)
    nonce = _s.token_urlsafe(16)
    url, state = rp.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce, **params
    )
    page = browser.follow(browser.get(url))
    if "password" in page.text and page.status_code == 200:
        page = browser.login(email, PASSWORD, page)
    if page.status_code == 200 and "decision" in page.text:
        page = browser.consent(page)
    assert page.status_code == 302, page.text
    callback = page.headers["Location"]
    return callback, verifier, nonce, state


def test_code_flow_with_pkce_id_token_userinfo_refresh_revoke_logout(
    idp_factory: Any, logout_receiver: Receiver
) -> None:
    # reuse detection without the grace window for retries (tests/idp/test_refresh_grace.py)
    idp = idp_factory(refresh_token_grace_seconds=0)
    redirect = "http://127.0.0.1:9/cb"
    cid, secret = idp.add_client(
        name="Bürgeramt",
        redirect_uris=[redirect],
        post_logout_redirect_uris=["http://127.0.0.1:9/bye"],
        backchannel_logout_uri=logout_receiver.url,
    )
    idp.add_user("anna@example.org")
    browser = Browser(idp)
    rp = _rp(idp, cid, secret, redirect)
    meta = requests.get(f"{idp.url}/.well-known/openid-configuration", timeout=10).json()
    assert meta["issuer"] == idp.url and meta["code_challenge_methods_supported"] == ["S256"]

    callback, verifier, nonce, state = login_and_get_code(idp, browser, rp, "anna@example.org")
    q = query(callback)
    assert q["state"] == state
    assert q["iss"] == idp.url  # RFC 9207 §2

    token = rp.fetch_token(meta["token_endpoint"], authorization_response=callback, code_verifier=verifier)
    assert token["token_type"].lower() == "bearer"

    # ID token: signature against the published JWKS, and its claims (OIDC Core §3.1.3.7).
    jwks = KeySet.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
    id_tok = jwt.decode(token["id_token"], jwks, algorithms=["ES256"])
    claims = id_tok.claims
    assert id_tok.header["alg"] == "ES256" and id_tok.header["kid"]
    assert claims["iss"] == idp.url and cid in claims["aud"]
    assert claims["nonce"] == nonce
    assert claims["acr"] == LEVEL_LOW and claims["amr"] == ["pwd"]
    assert abs(claims["auth_time"] - time.time()) < 60
    assert claims["exp"] > time.time()
    assert claims["email"] == "anna@example.org" and claims["email_verified"] is True
    assert claims["sid"]

    # Access token is an RFC 9068 JWT.
    at = jwt.decode(token["access_token"], jwks, algorithms=["ES256"])
    assert at.header["typ"] == "at+jwt" and at.claims["client_id"] == cid

    # userinfo: same subject
    info = rp.get(meta["userinfo_endpoint"]).json()
    assert info["sub"] == claims["sub"] and info["email"] == "anna@example.org"

    # refresh with rotation
    old_refresh = token["refresh_token"]
    new = rp.refresh_token(meta["token_endpoint"], refresh_token=old_refresh)
    assert new["refresh_token"] != old_refresh

    # introspection (RFC 7662)
    intro = requests.post(
        meta["introspection_endpoint"], auth=(cid, secret), data={"token": new["access_token"]}, timeout=10
    ).json()
    assert intro["active"] is True and intro["sub"] == claims["sub"]

    # reuse detection: the rotated-out refresh token is replayed -> whole family revoked
    replay = requests.post(
        meta["token_endpoint"],
        auth=(cid, secret),
        timeout=10,
        data={"grant_type": "refresh_token", "refresh_token": old_refresh},
    )
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    again = requests.post(
        meta["token_endpoint"],
        auth=(cid, secret),
        timeout=10,
        data={"grant_type": "refresh_token", "refresh_token": new["refresh_token"]},
    )
    assert again.json()["error"] == "invalid_grant"
    intro = requests.post(
        meta["introspection_endpoint"], auth=(cid, secret), data={"token": new["access_token"]}, timeout=10
    ).json()
    assert intro == {"active": False}

    # Log in again for a fresh family, then revoke (RFC 7009) and log out.
    callback, verifier, _n, _s = login_and_get_code(idp, browser, rp, "anna@example.org")
    token = rp.fetch_token(meta["token_endpoint"], authorization_response=callback, code_verifier=verifier)
    r = requests.post(
        meta["revocation_endpoint"],
        auth=(cid, secret),
        timeout=10,
        data={"token": token["access_token"], "token_type_hint": "access_token"},
    )
    assert r.status_code == 200
    assert (
        requests.get(
            meta["userinfo_endpoint"],
            timeout=10,
            headers={"Authorization": f"Bearer {token['access_token']}"},
        ).status_code
        == 401
    )
    r = requests.post(
        meta["revocation_endpoint"], auth=(cid, secret), timeout=10, data={"token": token["refresh_token"]}
    )
    assert r.status_code == 200
    assert (
        requests.post(
            meta["token_endpoint"],
            auth=(cid, secret),
            timeout=10,
            data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
        ).status_code
        == 400
    )

    # RP-initiated logout with id_token_hint and a registered post-logout URI
    r = browser.get(
        meta["end_session_endpoint"],
        params={
            "id_token_hint": token["id_token"],
            "post_logout_redirect_uri": "http://127.0.0.1:9/bye",
            "state": "s1",
        },
    )
    assert r.status_code == 302 and r.headers["Location"] == "http://127.0.0.1:9/bye?state=s1"

    # back-channel logout delivered from the outbox
    from idp.oauth.backchannel import EVENT, deliver_due

    assert deliver_due(idp.sessions(), idp.key_cache) >= 1
    assert logout_receiver.event.wait(5)
    logout_token = logout_receiver.posts[-1]["logout_token"][0]
    lt = jwt.decode(logout_token, jwks, algorithms=["ES256"])
    assert lt.header["typ"] == "logout+jwt"
    assert EVENT in lt.claims["events"] and lt.claims["aud"] == cid
    assert lt.claims["sid"] == claims["sid"] and lt.claims["sub"] == claims["sub"]
    assert "nonce" not in lt.claims

    # the browser session is gone: the next authorization asks for the password again
    url, _ = rp.create_authorization_url(
        meta["authorization_endpoint"], code_verifier="x" * 50, prompt="none"
    )
    r = browser.get(url)
    assert r.status_code == 302 and query(r.headers["Location"])["error"] == "login_required"


def test_public_client_with_pkce_and_pairwise_subjects_differ_per_sector(idp: Idp) -> None:
    a_redirect, b_redirect = "http://127.0.0.1:9/a", "http://localhost:9/b"
    a, _ = idp.add_client(name="App A", redirect_uris=[a_redirect], auth_method="none")
    b, b_secret = idp.add_client(name="Service B", redirect_uris=[b_redirect])
    idp.add_user("ben@example.org")
    browser = Browser(idp)
    token_url = f"{idp.url}/token"
    rp_a = _rp(idp, a, None, a_redirect)
    cb, verifier, _n, _s = login_and_get_code(idp, browser, rp_a, "ben@example.org")
    tok_a = rp_a.fetch_token(token_url, authorization_response=cb, code_verifier=verifier)
    rp_b = _rp(idp, b, b_secret, b_redirect)
    cb, verifier, _n, _s = login_and_get_code(idp, browser, rp_b, "ben@example.org")
    tok_b = rp_b.fetch_token(token_url, authorization_response=cb, code_verifier=verifier)
    sub_a = jwt.decode(tok_a["id_token"], _jwks(idp)).claims["sub"]
    sub_b = jwt.decode(tok_b["id_token"], _jwks(idp)).claims["sub"]
    assert sub_a != sub_b  # OIDC Core §8.1 pairwise per sector


def _jwks(idp: Idp) -> KeySet:
    return KeySet.import_key_set(requests.get(f"{idp.url}/jwks.json", timeout=10).json())


def test_client_credentials_token_is_rfc9068_jwt(idp: Idp) -> None:
    cid, secret = idp.add_client(name="Backend", grant_types=["client_credentials"], scope="permits:read")
    r = requests.post(
        f"{idp.url}/token",
        auth=(cid, secret),
        timeout=10,
        data={"grant_type": "client_credentials", "scope": "permits:read"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    at = jwt.decode(r.json()["access_token"], _jwks(idp))
    assert at.claims["sub"] == f"client:{cid}" and at.claims["scope"] == "permits:read"  # RFC 9068 §5
    assert "refresh_token" not in r.json()


def test_prompt_login_and_max_age_ask_for_the_password_again_oidc_core_3_1_2_1(idp: Idp) -> None:
    redirect = "http://127.0.0.1:9/cb"
    cid, secret = idp.add_client(name="Svc", redirect_uris=[redirect])
    idp.add_user("cara@example.org")
    browser = Browser(idp)
    rp = _rp(idp, cid, secret, redirect)
    login_and_get_code(idp, browser, rp, "cara@example.org")
    # logged in and consented: a plain request goes straight back with a code
    url, _ = rp.create_authorization_url(f"{idp.url}/authorize", code_verifier="v" * 50)
    r = browser.get(url)
    assert r.status_code == 302 and "code=" in r.headers["Location"]
    for extra in ({"prompt": "login"}, {"max_age": "0"}):
        time.sleep(1.1)
        url, _ = rp.create_authorization_url(f"{idp.url}/authorize", code_verifier="v" * 50, **extra)
        r = browser.follow(browser.get(url))
        assert r.status_code == 200 and 'name="password"' in r.text, extra
        r = browser.login("cara@example.org", PASSWORD, r)
        assert r.status_code == 302 and "code=" in r.headers["Location"], extra
        q = query(r.headers["Location"])
        tok = rp.fetch_token(f"{idp.url}/token", code=q["code"], code_verifier="v" * 50)
        auth_time = jwt.decode(tok["id_token"], _jwks(idp)).claims["auth_time"]
        assert time.time() - auth_time < 3, extra


def test_consent_is_remembered_and_can_be_denied(idp: Idp) -> None:
    redirect = "http://127.0.0.1:9/cb"
    cid, secret = idp.add_client(name="Svc", redirect_uris=[redirect])
    idp.add_user("dora@example.org")
    browser = Browser(idp)
    rp = _rp(idp, cid, secret, redirect)
    url, state = rp.create_authorization_url(f"{idp.url}/authorize", code_verifier="v" * 50)
    page = browser.login("dora@example.org", PASSWORD, browser.follow(browser.get(url)))
    assert "Svc" in page.text and "decision" in page.text
    r = browser.consent(page, decision="deny")
    q = query(r.headers["Location"])
    assert q["error"] == "access_denied" and q["state"] == state and q["iss"] == idp.url
    # prompt=none without consent -> consent_required (OIDC Core §3.1.2.6)
    url, _ = rp.create_authorization_url(f"{idp.url}/authorize", code_verifier="v" * 50, prompt="none")
    assert query(browser.get(url).headers["Location"])["error"] == "consent_required"


def tokens_alive(idp: Idp, client: str, secret: str | None, tok: Any) -> tuple[int, int]:
    """/userinfo with the access token and a refresh with the refresh token (which rotates it):
    (200, 200) while the grant lives, (401, 400) once it is revoked."""
    ui = requests.get(
        f"{idp.url}/userinfo", headers={"Authorization": f"Bearer {tok['access_token']}"}, timeout=10
    )
    rt = requests.post(
        f"{idp.url}/token",
        auth=(client, secret or ""),
        data={"grant_type": "refresh_token", "refresh_token": tok["refresh_token"]},
        timeout=10,
    )
    return ui.status_code, rt.status_code


def _tokens(idp: Idp, cid: str, secret: str | None, email: str, scope: str) -> Any:
    rp = _rp(idp, cid, secret, "http://127.0.0.1:9/cb", scope=scope)
    callback, verifier, _nonce, _state = login_and_get_code(idp, Browser(idp), rp, email)
    return rp.fetch_token(f"{idp.url}/token", authorization_response=callback, code_verifier=verifier)


def test_a_wrong_token_type_hint_does_not_stop_the_search_rfc7009_2_1_rfc7662_2_1(idp: Idp) -> None:
    cid, secret = idp.add_client(name="Svc", redirect_uris=["http://127.0.0.1:9/cb"])
    idp.add_user("anna@example.org")
    tok = _tokens(idp, cid, secret, "anna@example.org", "openid email")
    at, rt = tok["access_token"], tok["refresh_token"]
    post = {"auth": (cid, secret or ""), "timeout": 10}
    for token, wrong_hint in ((at, "refresh_token"), (rt, "access_token")):
        r = requests.post(
            f"{idp.url}/introspect", data={"token": token, "token_type_hint": wrong_hint}, **post
        )
        assert r.json()["active"] is True, wrong_hint
    r = requests.post(f"{idp.url}/revoke", data={"token": at, "token_type_hint": "refresh_token"}, **post)
    assert r.status_code == 200
    r = requests.get(f"{idp.url}/userinfo", headers={"Authorization": f"Bearer {at}"}, timeout=10)
    assert r.status_code == 401  # revoked, whatever the hint said


def test_a_narrowed_refresh_keeps_the_refresh_tokens_scope_rfc6749_6(idp: Idp) -> None:
    cid, secret = idp.add_client(name="Svc", redirect_uris=["http://127.0.0.1:9/cb"])
    idp.add_user("anna@example.org")
    tok = _tokens(idp, cid, secret, "anna@example.org", "openid email")

    def refresh(rt: str, scope: str | None = None) -> Any:
        data = {"grant_type": "refresh_token", "refresh_token": rt, **({"scope": scope} if scope else {})}
        r = requests.post(f"{idp.url}/token", auth=(cid, secret or ""), data=data, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    narrow = refresh(tok["refresh_token"], "openid")
    assert narrow["scope"] == "openid"  # this access token: only what was asked for
    again = refresh(narrow["refresh_token"], "openid email")  # the granted scope, still there
    assert set(again["scope"].split()) == {"openid", "email"}
    assert set(refresh(again["refresh_token"])["scope"].split()) == {"openid", "email"}


def test_withdrawn_consent_stops_the_services_tokens_and_logs_it_out_gdpr_7_3(
    idp: Idp, logout_receiver: Receiver
) -> None:
    from idp.oauth.backchannel import deliver_due

    redirect = "http://127.0.0.1:9/cb"
    cid, secret = idp.add_client(
        name="Kasse", redirect_uris=[redirect], backchannel_logout_uri=logout_receiver.url
    )
    other, other_secret = idp.add_client(name="Bibliothek", redirect_uris=[redirect])
    idp.add_user("ines@example.org")
    browser = Browser(idp)
    tokens = []
    for client, sec in ((cid, secret), (other, other_secret)):
        rp = _rp(idp, client, sec, redirect)
        callback, verifier, _nonce, _state = login_and_get_code(idp, browser, rp, "ines@example.org")
        tokens.append(
            rp.fetch_token(f"{idp.url}/token", authorization_response=callback, code_verifier=verifier)
        )

    page = browser.get(f"{idp.url}/account")
    r = browser.post(
        f"{idp.url}/account/consents/withdraw", {"csrf_token": csrf(page.text), "client_id": cid}
    )
    assert r.status_code == 303

    assert tokens_alive(idp, cid, secret, tokens[0]) == (401, 400)  # the withdrawn service: at once
    assert tokens_alive(idp, other, other_secret, tokens[1]) == (200, 200)  # the other one: untouched
    assert browser.get(f"{idp.url}/account").status_code == 200  # the citizen stays logged in
    assert deliver_due(idp.sessions(), idp.key_cache) == 1
    assert logout_receiver.event.wait(5)
    claims = jwt.decode(logout_receiver.posts[-1]["logout_token"][0], _jwks(idp)).claims
    assert claims["aud"] == cid and "sub" in claims and "sid" not in claims  # all its sessions
