"""A DPoP client key for tests: makes proofs (RFC 9449 §4.2) with knobs to break them."""

from __future__ import annotations

import secrets
import time
from typing import Any

from joserfc import jws
from joserfc.jwk import ECKey

from idp.oauth.dpop import access_token_hash


class DpopKey:
    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256", private=True)
        self.nonce: str | None = None

    @property
    def jkt(self) -> str:
        return self.key.thumbprint()

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        iat: int | None = None,
        jti: str | None = None,
        **over: Any,
    ) -> str:
        claims: dict[str, Any] = {
            "jti": jti or secrets.token_urlsafe(16),
            "htm": method,
            "htu": url,
            "iat": int(time.time()) if iat is None else iat,
        }
        if self.nonce:
            claims["nonce"] = self.nonce
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        claims.update(over)
        claims = {k: v for k, v in claims.items() if v is not None}
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.key.as_dict(private=False)}
        import json

        return jws.serialize_compact(header, json.dumps(claims).encode(), self.key)
