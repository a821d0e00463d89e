"""Step-up through HTTP: a real cityid (simulator eID), a citizen's browser, an RP's calls."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.idp.conftest import Browser, Idp, csrf, idp, idp_factory, pkce_pair, query

__all__ = ["idp", "idp_factory"]  # the provider fixture, shared with tests/idp

PASSWORD = "correct horse battery staple"
REDIRECT = "http://127.0.0.1:9/cb"
ACTION_RE = re.compile(r'<form method="post" action="([^"]+)"')


@dataclass
class Rp:
    """A relying service registered at ``idp``, speaking plain HTTP."""

    idp: Idp
    client_id: str
    secret: str | None
    redirect_uri: str = REDIRECT

    def authorize_url(self, scope: str = "openid", **params: str) -> tuple[str, str, str]:
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(8)
        q = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": scope,
            "state": state,
            "nonce": secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **params,
        }
        return f"{self.idp.url}/authorize?{urlencode(q)}", verifier, state

    def redeem(self, callback: str, verifier: str) -> dict[str, Any]:
        q = query(callback)
        assert "code" in q, callback
        resp = requests.post(
            f"{self.idp.url}/token",
            auth=(self.client_id, self.secret or ""),
            data={
                "grant_type": "authorization_code",
                "code": q["code"],
                "redirect_uri": self.redirect_uri,
                "code_verifier": verifier,
            },
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        token: dict[str, Any] = resp.json()
        return token

    def claims(self, token: str) -> dict[str, Any]:
        jwks = KeySet.import_key_set(requests.get(f"{self.idp.url}/jwks.json", timeout=10).json())
        return dict(jwt.decode(token, jwks, algorithms=["ES256"]).claims)


def post_form(browser: Browser, page: requests.Response, data: dict[str, str]) -> requests.Response:
    """Submit the page's first form (its action), with its CSRF token if it has one."""
    action = ACTION_RE.search(page.text)
    assert action, page.text
    target = action.group(1).replace("&amp;", "&")
    if target.startswith("/"):
        target = browser.idp.url + target
    if 'name="csrf_token"' in page.text:
        data = {"csrf_token": csrf(page.text), **data}
    return browser.follow(browser.post(target, data))


def eid_confirm(
    browser: Browser, page: requests.Response, persona: str = "erika", level: str = "high", **extra: str
) -> requests.Response:
    """On the eID page: go to the simulator, pick a person, come back."""
    assert page.status_code == 200 and "/login/eid" in page.url, (page.url, page.text[:500])
    assert "SIMULATION" in page.text
    sim = post_form(browser, page, {"eid": "start"})
    assert sim.status_code == 200 and "/login/eid/simulator" in sim.url, sim.text
    assert "SIMULATION" in sim.text
    state = re.search(r'name="state" value="([^"]+)"', sim.text)
    assert state
    return browser.follow(
        browser.post(
            f"{browser.idp.url}/login/eid/callback",
            {"state": state.group(1), "persona": persona, "level": level, **extra},
        )
    )


def finish(browser: Browser, page: requests.Response) -> requests.Response:
    """Consent if asked; the answer is the redirect to the RP."""
    if page.status_code == 200 and 'name="decision"' in page.text:
        page = browser.consent(page)
    return page


@pytest.fixture
def eid_idp(idp_factory: Any) -> Idp:
    idp: Idp = idp_factory(eid_connector="simulator", eid_simulator_enabled=True)
    return idp


def walk(
    browser: Browser, page: requests.Response, email: str, **eid: str
) -> tuple[list[str], requests.Response]:
    """Do every step page the IdP shows until it redirects to the RP; return the step pages
    seen (paths, in order, consent excluded) and the redirect to the RP."""
    seen: list[str] = []
    for _ in range(8):
        if page.status_code in (301, 302, 303):
            return seen, page
        assert page.status_code == 200, (page.status_code, page.url, page.text[:800])
        path = urlsplit(page.url).path
        if 'name="decision"' in page.text:
            page = browser.consent(page)
            continue
        seen.append(path)
        if path == "/login":
            page = browser.login(email, PASSWORD, page)
        elif path == "/login/eid":
            page = eid_confirm(browser, page, **eid)
        else:
            raise AssertionError(f"unexpected page {page.url}")
    raise AssertionError("too many steps")
