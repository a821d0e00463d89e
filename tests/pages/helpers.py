"""Small steps the page tests share."""

from __future__ import annotations

import re
from typing import Any

import requests
from authlib.integrations.requests_client import OAuth2Session

from tests.idp.conftest import Browser, Idp, csrf

PASSWORD = "correct horse battery staple"


def logged_in(idp: Idp, email: str, password: str = PASSWORD) -> tuple[Browser, str]:
    """A browser logged in as `email`, and its account page."""
    b = Browser(idp)
    page = b.login(email, password, b.get(idp.url + "/login"))
    assert page.status_code == 200 and "/account/logout" in page.text, page.text
    return b, page.text


def sign_in_to_service(
    idp: Idp, b: Browser, client_id: str, secret: str, redirect: str, email: str
) -> dict[str, Any]:
    """The code flow through the pages (login if needed, consent), then the token response."""
    rp = OAuth2Session(
        client_id, secret, scope="openid email", redirect_uri=redirect, code_challenge_method="S256"
    )
    verifier = "v" * 50
    url, _state = rp.create_authorization_url(idp.url + "/authorize", code_verifier=verifier, nonce="n1")
    page = b.follow(b.get(url))
    if page.status_code == 200 and 'name="password"' in page.text:
        page = b.login(email, PASSWORD, page)
    if page.status_code == 200 and "decision" in page.text:
        page = b.consent(page)
    assert page.status_code == 302, page.text
    token: dict[str, Any] = rp.fetch_token(
        idp.url + "/token", authorization_response=page.headers["Location"], code_verifier=verifier
    )
    return token


def form_action(html: str, contains: str) -> str:
    for action in re.findall(r'<form method="post" action="([^"]+)"', html):
        if contains in action:
            return action.replace("&amp;", "&")
    raise AssertionError(f"no form posting to {contains}")


def post_form(b: Browser, page_html: str, action: str, **fields: str) -> requests.Response:
    return b.post(b.idp.url + action, {"csrf_token": csrf(page_html), **fields})


def init_ca(idp: Idp) -> None:
    """Create the instance's CA, as `cityid init` does: deleting an account revokes its devices'
    certificates (a DELETE_HOOK of the smartcard package), which needs the CA."""
    import pki
    from db import transaction

    cfg = idp.config
    with transaction(idp.sessions()) as s:
        pki.init_ca(s, cfg.ca, pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase), cfg.issuer)
