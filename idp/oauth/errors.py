"""RFC 6749 §4.1.2.1 / §5.2: an ``error_description`` holds only %x20-21 / %x23-5B / %x5D-7E.

Authlib's ``OAuth2Error`` enforces that by raising ``ValueError`` when it is *constructed* with
another character, and Authlib builds many of its errors from what the request sent
(``Redirect URI {redirect_uri} is not supported by client.``, ``The response type '{…}' …``).
A ``"``, a ``\\``, a tab or an ``ü`` in a parameter therefore became a 500 instead of the
protocol error, at the authorization endpoint, PAR and wherever else Authlib names a value.

The one place every OAuth error passes is its constructor: :func:`install` wraps it once so
the description is made safe there (each character outside the set percent-encoded as UTF-8,
so a developer can still read what was sent), whoever builds the error — Authlib or cityid.
Our own JSON and ``WWW-Authenticate`` errors use :func:`safe_description` directly.

RFC 6749 §5.2 makes ``error_description`` optional; cityid always sends one (docs: every JSON
error is ``{"error", "error_description"}``), so an error Authlib raises without a text (e.g.
``unsupported_grant_type`` for a missing ``grant_type``) gets the short meaning of its code
from :data:`DEFAULT_DESCRIPTIONS`, in the same constructor.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.base import OAuth2Error

MAX_DESCRIPTION = 500  # characters: a description names a value, it does not echo a request


def _allowed(c: str) -> bool:
    o = ord(c)
    return 0x20 <= o <= 0x21 or 0x23 <= o <= 0x5B or 0x5D <= o <= 0x7E  # RFC 6749 §5.2


def safe_description(text: str) -> str:
    """``text`` in RFC 6749's error_description set: every other character percent-encoded."""
    if len(text) > MAX_DESCRIPTION:
        text = text[: MAX_DESCRIPTION - 3] + "..."
    if all(_allowed(c) for c in text):
        return text
    return "".join(c if _allowed(c) else _percent_encoded(c) for c in text)


def _percent_encoded(c: str) -> str:
    return "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))


# RFC 6749 §4.1.2.1 and §5.2, RFC 6750 §3.1, RFC 7009 §2.2.1, RFC 9126 §2.3, RFC 9449 §7.1
DEFAULT_DESCRIPTIONS = {
    "invalid_request": "the request is missing a parameter or is malformed",
    "invalid_client": "client authentication failed",
    "invalid_grant": "the grant is invalid, expired or revoked",
    "unauthorized_client": "this client may not use this grant type",
    "unsupported_grant_type": "the grant type is not supported",
    "invalid_scope": "the requested scope is invalid or unknown",
    "access_denied": "the request was denied",
    "unsupported_response_type": "the response type is not supported",
    "server_error": "the server could not answer the request",
    "temporarily_unavailable": "the server is briefly unavailable",
    "invalid_token": "the access token is not valid",
    "insufficient_scope": "the access token lacks the required scope",
    "unsupported_token_type": "the token type is not supported",
    "invalid_request_uri": "the request_uri is unknown or expired",
    "invalid_dpop_proof": "the DPoP proof is not valid",
}


def default_description(error: str | None) -> str:
    return DEFAULT_DESCRIPTIONS.get(error or "", "the request was refused")


_original_init = OAuth2Error.__init__


def _safe_init(self: OAuth2Error, description: Any = None, *args: Any, **kwargs: Any) -> None:
    if isinstance(description, str):
        description = safe_description(description)
    _original_init(self, description, *args, **kwargs)
    if not self.description:  # RFC 6749 §5.2: optional there, always present here
        self.description = default_description(self.error)


def install() -> None:
    """Make every ``OAuth2Error`` safe to build from request values (idempotent)."""
    OAuth2Error.__init__ = _safe_init
