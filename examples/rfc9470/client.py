"""A client that follows RFC 9470 step-up challenges.

It calls a resource; on ``401`` with ``error="insufficient_user_authentication"`` it reads the
challenge's ``acr_values`` and ``max_age``, sends the user to cityid again with them (RFC 9470
§4), and retries with the new access token. ``user_agent`` stands for the citizen's browser:
it gets the authorization URL and returns the redirect URI cityid sent it to.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

AUTH_PARAM = re.compile(r'([a-zA-Z_]+)=(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> dict[str, str]:
    """RFC 6750 §3 / RFC 9110 §11.2: the auth-params of a Bearer challenge."""
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "bearer":
        return {}
    return {
        m.group(1): m.group(2) if m.group(2) is not None else m.group(3) for m in AUTH_PARAM.finditer(rest)
    }


class StepUpClient:
    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        user_agent: Callable[[str], str],
        scope: str = "openid",
    ) -> None:
        self.meta = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
        self.issuer = issuer
        self.client_id, self.client_secret = client_id, client_secret
        self.redirect_uri, self.scope = redirect_uri, scope
        self.user_agent = user_agent
        self.access_token: str | None = None
        self.step_ups = 0

    def authorize(self, **extra: str) -> None:
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(16)
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **extra,
        }
        back = self.user_agent(f"{self.meta['authorization_endpoint']}?{urlencode(params)}")
        answer = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
        if answer.get("state") != state or answer.get("iss") != self.issuer:  # RFC 9207 §2.4
            raise RuntimeError("authorization response is not ours")
        if "error" in answer:
            raise RuntimeError(f"authorization refused: {answer['error']}")
        token = requests.post(
            self.meta["token_endpoint"],
            auth=(self.client_id, self.client_secret),
            data={
                "grant_type": "authorization_code",
                "code": answer["code"],
                "redirect_uri": self.redirect_uri,
                "code_verifier": verifier,
            },
            timeout=10,
        )
        token.raise_for_status()
        self.access_token = token.json()["access_token"]

    def get(self, url: str) -> requests.Response:
        if self.access_token is None:
            self.authorize()
        resp = self._call(url)
        challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
        if resp.status_code == 401 and challenge.get("error") == "insufficient_user_authentication":
            # RFC 9470 §4: ask again, passing the resource server's acr_values and max_age.
            extra: dict[str, Any] = {}
            if challenge.get("acr_values"):
                extra["acr_values"] = challenge["acr_values"]
            if challenge.get("max_age"):
                extra["max_age"] = challenge["max_age"]
            self.step_ups += 1
            self.authorize(**extra)
            resp = self._call(url)
        return resp

    def _call(self, url: str) -> requests.Response:
        return requests.get(url, headers={"Authorization": f"Bearer {self.access_token}"}, timeout=10)
