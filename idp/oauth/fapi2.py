"""The FAPI 2.0 Security Profile (OpenID Foundation, final 2025) as a per-client switch.

A client registered with ``--profile fapi2`` is held to the profile's rules for authorization
servers; each rule is checked where the protocol step happens (the section of the profile is cited
there too):

- §5.3.2.1: client authentication by private_key_jwt (or mTLS, which cityid does not offer):
  ``idp.clients`` refuses other methods at registration;
- §5.3.2.1: only sender-constrained access tokens (DPoP, RFC 9449, or mTLS, RFC 8705): every token
  request of the client carries a DPoP proof or a device certificate (``sender_constraint_refusal``),
  and its refresh tokens are bound to that key like a public client's (no refresh without it);
- §5.3.2.1: authorization codes live 60 seconds at most (``code_lifetime``);
- §5.3.2.2: authorization requests only pushed (RFC 9126), with ``redirect_uri``;
- §5.3.2.2: PKCE with S256 always (``allow_missing_pkce`` cannot be set);
- §5.3.2.2: ``iss`` in the authorization response (RFC 9207; cityid sends it to every client).

This module holds the rules as data and small pure checks; it imports nothing of ours.
"""

from __future__ import annotations

from typing import Any

FAPI2 = "fapi2"
SPEC = "https://openid.net/specs/fapi-security-profile-2_0-final.html"
AUTH_METHODS = ("private_key_jwt",)  # §5.3.2.1 (mTLS client authentication: not offered)
MAX_CODE_LIFETIME = 60  # seconds, §5.3.2.1


def is_fapi2(client_row: Any) -> bool:
    return bool(getattr(client_row, "profile", "") == FAPI2)


def code_lifetime(client_row: Any, configured: int) -> int:
    """§5.3.2.1: a FAPI 2.0 client's codes live at most 60 s (``configured`` for the others)."""
    return min(configured, MAX_CODE_LIFETIME) if is_fapi2(client_row) else configured


def sender_constraint_refusal(client_row: Any, *, dpop: bool, mtls: bool) -> str | None:
    """§5.3.2.1: a FAPI 2.0 client gets sender-constrained access tokens only; a token request
    without a DPoP proof or a client certificate is refused (no bearer token is ever issued)."""
    if is_fapi2(client_row) and not (dpop or mtls):
        return "a FAPI 2.0 client's tokens must be sender-constrained: send a DPoP proof (RFC 9449)"
    return None


def binds_refresh_tokens(client_row: Any) -> bool:
    """Whose refresh tokens are bound to the DPoP key or certificate of the first token request:
    public clients (RFC 9449 §5, RFC 8705 §4) and FAPI 2.0 clients (§5.3.2.1: no refresh without
    the sender constraint)."""
    return bool(getattr(client_row, "token_endpoint_auth_method", "") == "none" or is_fapi2(client_row))


def profiles_metadata() -> dict[str, dict[str, Any]]:
    """What each client profile needs, for the discovery document (vendor field)."""
    common = {
        "code_challenge_methods_supported": ["S256"],
        "pkce_required": True,  # RFC 9700 §2.1.1 (a legacy confidential client may be let off)
        "authorization_response_iss_parameter_supported": True,  # RFC 9207
    }
    return {
        "default": common
        | {
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
                "none",
            ],
            "sender_constrained_access_tokens_required": False,
        },
        FAPI2: common
        | {
            "specification": SPEC,
            "require_pushed_authorization_requests": True,
            "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
            "sender_constrained_access_tokens_required": True,
            "sender_constraint_methods_supported": ["dpop", "tls_client_certificate_bound_access_tokens"],
            "authorization_code_lifetime_max": MAX_CODE_LIFETIME,
        },
    }
