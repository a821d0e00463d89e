"""A resource server that demands a level of assurance (RFC 9470 step-up challenge).

It accepts cityid's JWT access tokens (RFC 9068) and answers ``401`` with
``WWW-Authenticate: Bearer error="insufficient_user_authentication", acr_values=..., max_age=...``
when the token's ``acr`` is too weak or its ``auth_time`` too old.

    python examples/rfc9470/resource_server.py https://login.musterstadt.de CLIENT_ID
"""

from __future__ import annotations

import sys
import time
from typing import Any

import requests
from flask import Flask, jsonify, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

# eIDAS levels in order; cityid publishes them in acr_values_supported.
LEVELS = [
    "http://eidas.europa.eu/LoA/low",
    "http://eidas.europa.eu/LoA/substantial",
    "http://eidas.europa.eu/LoA/high",
]


def create_app(issuer: str, audience: str, *, required_acr: str, max_age: int | None = None) -> Flask:
    app = Flask(__name__)
    meta = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    jwks = KeySet.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())

    def challenge(error: str, description: str, status: int, **params: Any) -> Any:
        # RFC 6750 §3: auth-params; RFC 9470 §3: acr_values and max_age in the challenge.
        parts = [f'error="{error}"', f'error_description="{description}"']
        parts += [f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in params.items()]
        resp = jsonify(error=error, error_description=description)
        resp.status_code = status
        resp.headers["WWW-Authenticate"] = "Bearer " + ", ".join(parts)
        return resp

    @app.get("/permits")
    def permits() -> Any:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return challenge("invalid_token", "no access token", 401)
        try:
            token = jwt.decode(auth[7:], jwks, algorithms=["ES256", "RS256"])
            # RFC 9068 §4: typ at+jwt, iss, aud, exp.
            if token.header.get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
                raise ValueError("not an access token")
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": issuer},
                aud={"essential": True, "value": audience},
                exp={"essential": True},
            ).validate(token.claims)
        except (JoseError, ValueError) as exc:
            return challenge("invalid_token", str(exc)[:100], 401)
        claims = token.claims
        acr = claims.get("acr")
        rank = LEVELS.index(acr) if acr in LEVELS else -1
        extra: dict[str, Any] = {"acr_values": required_acr}
        if max_age is not None:
            extra["max_age"] = max_age
        # RFC 9470 §3: the authentication level is insufficient ...
        if rank < LEVELS.index(required_acr):
            return challenge("insufficient_user_authentication", "a stronger login is required", 401, **extra)
        # ... or the authentication is too old (auth_time, RFC 9068 §2.2.1).
        if max_age is not None and int(claims.get("auth_time", 0)) + max_age < time.time():
            return challenge(
                "insufficient_user_authentication", "a more recent login is required", 401, **extra
            )
        return jsonify(permits=["Baugenehmigung 2026-0815"], acr=acr, sub=claims["sub"])

    return app


if __name__ == "__main__":
    create_app(sys.argv[1], sys.argv[2], required_acr=LEVELS[2], max_age=600).run(port=8001)
