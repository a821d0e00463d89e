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


_original_init = OAuth2Error.__init__


def _safe_init(self: OAuth2Error, description: Any = None, *args: Any, **kwargs: Any) -> None:
    if isinstance(description, str):
        description = safe_description(description)
    _original_init(self, description, *args, **kwargs)


def install() -> None:
    """Make every ``OAuth2Error`` safe to build from request values (idempotent)."""
    OAuth2Error.__init__ = _safe_init
