"""The request classes: werkzeug's, with header parsing that never raises on hostile input.

werkzeug's ``Request.authorization`` decodes ``Basic`` credentials as base64 of UTF-8 and
raises ``ValueError`` when they are not (a byte over 0x7F in the header, an invalid base64
string, a decoded byte sequence that is no UTF-8). Every caller (Authlib's client
authentication, the token endpoint's audit of who a refused request claimed to be, the PAR
error's WWW-Authenticate) would have to catch it, and one that did not made the request a 500.
Here it is caught once: credentials that cannot be decoded are no credentials (RFC 7617 §2),
so the request is refused as unauthenticated (``invalid_client``, RFC 6749 §5.2).
"""

from __future__ import annotations

from flask import Request as FlaskRequest
from werkzeug.datastructures import Authorization
from werkzeug.utils import cached_property
from werkzeug.wrappers import Request as WerkzeugRequest


class SafeAuthorization(WerkzeugRequest):
    @cached_property
    def authorization(self) -> Authorization | None:
        try:
            return Authorization.from_header(self.headers.get("Authorization"))
        except ValueError:  # UnicodeDecodeError and binascii.Error too
            return None


class CityidRequest(SafeAuthorization, FlaskRequest):
    """Flask's request class of the app (``app.request_class``)."""
