"""RP-Initiated Logout 1.0: who may log a citizen out without asking, and what a logout reaches.

A link to /logout is a top-level navigation: the SameSite=Lax session cookie goes with it. So the
ID token given as `id_token_hint` confirms a logout only when it was issued in this very browser
session (its `sid`); anyone else's ID token, or an access token signed by the same keys, must not
end a citizen's session and revoke the refresh tokens of all their services.
"""

from __future__ import annotations

from typing import Any

import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.idp.conftest import Browser, Idp, csrf, query
from tests.idp.test_code_flow import _rp, login_and_get_code, tokens_alive

REDIRECT = "http://127.0.0.1:9/cb"
BYE = "http://127.0.0.1:9/bye"


def _tokens(idp: Idp, browser: Browser, cid: str, secret: str | None, email: str, **params: str) -> Any:
    rp = _rp(idp, cid, secret, REDIRECT)
    callback, verifier, _nonce, _state = login_and_get_code(idp, browser, rp, email, **params)
    return rp.fetch_token(f"{idp.url}/token", authorization_response=callback, code_verifier=verifier)


def _alive(idp: Idp, cid: str, secret: str | None, browser: Browser, tok: Any) -> tuple[int, int, int]:
    """The tokens (a refresh rotates: pass a fresh `tok` each time) and the citizen's account
    page: (200, 200, 200) while logged in."""
    return (*tokens_alive(idp, cid, secret, tok), browser.get(f"{idp.url}/account").status_code)


def _setup(idp: Idp) -> tuple[str, str | None]:
    cid, secret = idp.add_client(name="Svc", redirect_uris=[REDIRECT], post_logout_redirect_uris=[BYE])
    idp.add_user("mallory@example.org")
    idp.add_user("victim@example.org")
    return cid, secret


def test_another_sessions_id_token_hint_asks_the_citizen_first_rp_initiated_logout_2_6(idp: Idp) -> None:
    cid, secret = _setup(idp)
    mallory = _tokens(idp, Browser(idp), cid, secret, "mallory@example.org")
    victim = Browser(idp)
    tok = _tokens(idp, victim, cid, secret, "victim@example.org")

    r = victim.get(
        f"{idp.url}/logout", params={"id_token_hint": mallory["id_token"], "post_logout_redirect_uri": BYE}
    )
    assert r.status_code == 200 and 'name="csrf_token"' in r.text  # the confirmation page, no redirect
    assert _alive(idp, cid, secret, victim, tok) == (200, 200, 200)

    # the citizen confirms: now the session ends, with the redirect the hint's service registered
    tok = _tokens(idp, victim, cid, secret, "victim@example.org")
    page = victim.get(
        f"{idp.url}/logout", params={"id_token_hint": mallory["id_token"], "post_logout_redirect_uri": BYE}
    )
    r = victim.post(f"{idp.url}{_form_action(page.text)}", {"csrf_token": csrf(page.text)})
    assert r.status_code == 302 and r.headers["Location"] == BYE
    assert _alive(idp, cid, secret, victim, tok) == (401, 400, 302)


def test_an_access_token_is_no_id_token_hint_rfc8725_3_11(idp: Idp) -> None:
    cid, secret = _setup(idp)
    victim = Browser(idp)
    tok = _tokens(idp, victim, cid, secret, "victim@example.org")
    own_access_token = tok["access_token"]  # at+jwt, signed by the same key as the ID token
    tok = _tokens(idp, victim, cid, secret, "victim@example.org")
    r = victim.get(
        f"{idp.url}/logout", params={"id_token_hint": own_access_token, "post_logout_redirect_uri": BYE}
    )
    assert r.status_code == 400 and "Location" not in r.headers  # §4: no redirect after an error
    assert _alive(idp, cid, secret, victim, tok) == (200, 200, 200)


def test_the_id_token_of_this_session_logs_out_at_once_rp_initiated_logout_2(idp: Idp) -> None:
    cid, secret = _setup(idp)
    victim = Browser(idp)
    tok = _tokens(idp, victim, cid, secret, "victim@example.org")
    hint = tok["id_token"]
    tok = _tokens(idp, victim, cid, secret, "victim@example.org")
    r = victim.get(
        f"{idp.url}/logout", params={"id_token_hint": hint, "post_logout_redirect_uri": BYE, "state": "x"}
    )
    assert r.status_code == 302 and query(r.headers["Location"]) == {"state": "x"}
    assert _alive(idp, cid, secret, victim, tok) == (401, 400, 302)


def test_a_logout_after_re_authentication_reaches_the_services_of_before_backchannel_logout_2_4(
    idp: Idp,
) -> None:
    """Logging in again as the same citizen (prompt=login, step-up) renews the cookie but keeps
    the OIDC session id: a logout still ends the grants given before it."""
    cid, secret = _setup(idp)
    browser = Browser(idp)
    before = _tokens(idp, browser, cid, secret, "victim@example.org")
    after = _tokens(idp, browser, cid, secret, "victim@example.org", prompt="login")
    keys = KeySet.import_key_set(requests.get(f"{idp.url}/jwks.json", timeout=10).json())
    sids = {jwt.decode(t["id_token"], keys).claims["sid"] for t in (before, after)}
    assert len(sids) == 1

    r = browser.get(f"{idp.url}/logout", params={"id_token_hint": after["id_token"]})
    assert r.status_code == 200 and 'name="csrf_token"' not in r.text  # logged out at once
    assert _alive(idp, cid, secret, browser, before)[:2] == (401, 400)


def _form_action(html: str) -> str:
    import html as h
    import re

    m = re.search(r'<form method="post" action="([^"]+)"', html)
    assert m, html
    return h.unescape(m.group(1))
