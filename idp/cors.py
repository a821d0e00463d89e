"""CORS (Fetch standard §3.2) for the endpoints a service's web front end calls from the browser.

A single-page app of a city service is a public client (code + PKCE, RFC 9700 §2.1.1): it fetches
the discovery document and the JWKS, exchanges and refreshes its code at /token, reads /userinfo
and revokes at /revoke, from its own origin. None of these requests carries a cookie or other
ambient authority (the client authenticates with what the request itself holds: PKCE verifier,
refresh token, access token, DPoP proof), so any origin may read the answers, as from a server:
``Access-Control-Allow-Origin: *`` without credentials. The citizen's pages (/authorize, /login,
/account, …), which do use the session cookie, get no CORS headers.
"""

from __future__ import annotations

from werkzeug.datastructures import Headers

CORS_PATHS = frozenset(
    {
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/jwks.json",
        "/token",
        "/userinfo",
        "/revoke",
        "/par",
    }
)

# every answer: readable from any origin, with the headers a client must see (RFC 9449 §8,
# RFC 6750 §3); no Allow-Credentials: cookies are never sent or honoured here
SIMPLE = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Expose-Headers", "DPoP-Nonce, WWW-Authenticate"),
]
# the answer to a preflight (OPTIONS with Access-Control-Request-Method)
PREFLIGHT = [
    *SIMPLE,
    ("Access-Control-Allow-Methods", "GET, POST"),
    ("Access-Control-Allow-Headers", "Authorization, Content-Type, DPoP"),
    ("Access-Control-Max-Age", "600"),
]


def is_preflight(method: str, headers: Headers) -> bool:
    """An OPTIONS request that asks what a cross-origin request may do (Fetch §3.2.2)."""
    return method == "OPTIONS" and "Access-Control-Request-Method" in headers
