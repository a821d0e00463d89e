"""Relying services (OAuth clients): registration and lookup. No Flask."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import audit, new_id
from idp.config import LEVEL_HIGH, LEVEL_LOW, LEVEL_SUBSTANTIAL, LOOPBACK_HOSTS
from idp.crypto import random_token
from idp.instance import InstanceKeys
from idp.models import Client
from idp.oauth.fapi2 import AUTH_METHODS as FAPI2_AUTH_METHODS
from idp.oauth.fapi2 import FAPI2

AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
LEVELS = (LEVEL_LOW, LEVEL_SUBSTANTIAL, LEVEL_HIGH)
PROFILES = ("", FAPI2)  # "": cityid's defaults; FAPI2: the FAPI 2.0 Security Profile


class ClientError(ValueError):
    pass


@dataclass(frozen=True)
class ClientSpec:
    name: str
    redirect_uris: list[str] = field(default_factory=list)
    grant_types: list[str] = field(default_factory=lambda: ["authorization_code", "refresh_token"])
    auth_method: str = "client_secret_basic"
    scope: str = "openid profile email"
    post_logout_redirect_uris: list[str] = field(default_factory=list)
    backchannel_logout_uri: str | None = None
    min_level: str | None = None
    subject_type: str = "pairwise"
    id_token_alg: str = "ES256"
    jwks: dict[str, object] | None = None
    logo_uri: str | None = None
    scope_levels: dict[str, str] = field(default_factory=dict)
    client_id: str | None = None
    require_par: bool = False  # RFC 9126 §6
    # RFC 9700 §2.1.1: PKCE for every client; True lets a legacy confidential client go without
    allow_missing_pkce: bool = False
    profile: str = ""  # "" or "fapi2"


def _check_uri(uri: str, *, what: str) -> None:
    if any(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in uri) or "*" in uri:
        raise ClientError(
            f"{what} must be one exact URI (no spaces, control characters or wildcards): {uri!r}"
        )
    parts = urlsplit(uri)
    if parts.fragment or "#" in uri:  # RFC 6749 §3.1.2: no fragment (an empty one neither)
        raise ClientError(f"{what} must not have a fragment: {uri}")
    if parts.username is not None or parts.password is not None:
        raise ClientError(f"{what} must not carry a user or password: {uri}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise ClientError(f"{what} has an invalid port: {uri}") from None
    if parts.scheme == "https" and parts.netloc:
        return
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return  # RFC 8252 §7.3 loopback, and local development
    if parts.scheme and parts.scheme not in ("http", "https", "javascript", "data") and "." in parts.scheme:
        return  # RFC 8252 §7.1 private-use scheme of a native app (reverse domain name)
    raise ClientError(f"{what} must be https (or http on loopback): {uri}")


def _check_jwks(jwks: Any) -> None:
    """A client's JWKS for private_key_jwt: public EC, RSA or OKP keys only (RFC 7517 §5). A
    private or symmetric key would sit here in clear, and a symmetric one would let HS256
    assertions stand for the client."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not 0 < len(keys) <= 10:
        raise ClientError('the JWKS must be {"keys": [...]} with 1 to 10 keys')
    for key in keys:
        if not isinstance(key, dict) or key.get("kty") not in ("EC", "RSA", "OKP"):
            raise ClientError("JWKS keys must be public EC, RSA or OKP keys")
        if any(member in key for member in ("d", "p", "q", "dp", "dq", "qi", "oth", "k")):
            raise ClientError("the JWKS holds private key material: register the public keys only")


# a chosen client_id: RFC 6749 §A.1 VSCHAR without the space (URNs and URLs are fine); it stands
# in logs and the CLI's output, where a line break or a control character would forge lines
CLIENT_ID = re.compile(r"[!-~]{1,64}")
# RFC 6749 §3.3: a scope token is printable ASCII without space, '"' and '\\'
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,100}")


def _check_scope_levels(scope_levels: dict[str, str]) -> None:
    for scope, level in scope_levels.items():
        if not SCOPE_TOKEN.fullmatch(scope):  # "payment " would never match: no level enforced
            raise ClientError(f"{scope!r} is not a scope (RFC 6749 §3.3)")
        if level not in LEVELS:
            raise ClientError(f"level of scope {scope} must be one of {', '.join(LEVELS)}")


def validate_spec(spec: ClientSpec) -> None:
    if spec.client_id is not None and not CLIENT_ID.fullmatch(spec.client_id):
        raise ClientError("a chosen client_id has 1 to 64 printable ASCII characters, no spaces")
    if not spec.name.strip():
        raise ClientError("a client needs a name")
    if len(spec.name) > 100 or any(unicodedata.category(c) in ("Cc", "Cf") for c in spec.name):
        # the name is shown on the login and consent pages: no line breaks or bidi overrides
        raise ClientError("a client name has at most 100 characters and no control characters")
    if spec.jwks is not None:
        _check_jwks(spec.jwks)
    if spec.auth_method not in AUTH_METHODS:
        raise ClientError(f"auth method must be one of {', '.join(AUTH_METHODS)}")
    for gt in spec.grant_types:
        if gt not in GRANT_TYPES:
            raise ClientError(f"unknown grant type {gt}")
    if "authorization_code" in spec.grant_types and not spec.redirect_uris:
        raise ClientError("authorization_code needs at least one redirect URI")
    if spec.auth_method == "none" and "client_credentials" in spec.grant_types:
        raise ClientError("a public client cannot use client_credentials")
    if spec.auth_method == "private_key_jwt" and not spec.jwks:
        raise ClientError("private_key_jwt needs the client's public JWKS")
    for uri in spec.redirect_uris:
        _check_uri(uri, what="redirect URI")
    for uri in spec.post_logout_redirect_uris:
        _check_uri(uri, what="post-logout redirect URI")
    if spec.backchannel_logout_uri:
        _check_uri(spec.backchannel_logout_uri, what="back-channel logout URI")
    if spec.min_level and spec.min_level not in LEVELS:
        raise ClientError(f"minimum level must be one of {', '.join(LEVELS)}")
    _check_scope_levels(spec.scope_levels)
    if spec.subject_type not in ("pairwise", "public"):
        raise ClientError("subject type must be pairwise or public")
    if spec.id_token_alg not in ("ES256", "RS256"):
        raise ClientError("ID token algorithm must be ES256 or RS256")
    _check_profile(spec.profile, spec.auth_method, allow_missing_pkce=spec.allow_missing_pkce)


def _check_profile(profile: str, auth_method: str, *, allow_missing_pkce: bool) -> None:
    if profile not in PROFILES:
        raise ClientError(f"profile must be {FAPI2} or none")
    if allow_missing_pkce and auth_method == "none":
        raise ClientError("a public client always uses PKCE (RFC 9700 §2.1.1)")
    if profile == FAPI2 and auth_method not in FAPI2_AUTH_METHODS:
        # FAPI 2.0 Security Profile §5.3.2.1: private_key_jwt or mTLS client authentication only
        # (cityid offers no mTLS client authentication, see docs/fapi2.md)
        raise ClientError(
            f"a {FAPI2} client authenticates with {' or '.join(FAPI2_AUTH_METHODS)}, not {auth_method}"
        )
    if profile == FAPI2 and allow_missing_pkce:
        raise ClientError(f"a {FAPI2} client always uses PKCE (FAPI 2.0 Security Profile §5.3.2.2)")


def add_client(
    session: Session, keys: InstanceKeys, spec: ClientSpec, *, actor: str = "admin"
) -> tuple[Client, str | None]:
    """Register a client. Returns it and, for secret-based methods, its secret (shown once)."""
    validate_spec(spec)
    client_id = spec.client_id or new_id(16)  # 128 bits, safe as a CLI argument
    if session.get(Client, client_id) is not None:
        raise ClientError(f"client {client_id} exists")
    secret = None
    if spec.auth_method in ("client_secret_basic", "client_secret_post"):
        secret = random_token(32)  # 256 bits
    row = Client(
        client_id=client_id,
        secret_digest=keys.secret_digest(secret) if secret else None,
        name=spec.name.strip(),
        redirect_uris=json.dumps(spec.redirect_uris),
        post_logout_redirect_uris=json.dumps(spec.post_logout_redirect_uris),
        grant_types=json.dumps(spec.grant_types),
        scope=spec.scope,
        token_endpoint_auth_method=spec.auth_method,
        jwks=json.dumps(spec.jwks) if spec.jwks else None,
        backchannel_logout_uri=spec.backchannel_logout_uri,
        min_level=spec.min_level,
        subject_type=spec.subject_type,
        id_token_alg=spec.id_token_alg,
        logo_uri=spec.logo_uri,
        scope_levels=json.dumps(spec.scope_levels),
        # FAPI 2.0 Security Profile §5.3.2.2: authorization requests only pushed (RFC 9126)
        require_par=spec.require_par or spec.profile == FAPI2,
        allow_missing_pkce=spec.allow_missing_pkce,
        profile=spec.profile,
    )
    session.add(row)
    audit.record(
        session,
        action="client.add",
        outcome="success",
        actor=actor,
        subject=client_id,
        reason=spec.name,
        details={
            "auth_method": spec.auth_method,
            "profile": spec.profile,
            "allow_missing_pkce": spec.allow_missing_pkce,
        },
    )
    return row, secret


def list_clients(session: Session) -> list[Client]:
    return list(session.execute(select(Client).order_by(Client.created_at)).scalars())


def remove_client(session: Session, client_id: str, *, actor: str = "admin") -> None:
    row = session.get(Client, client_id)
    if row is None:
        raise ClientError(f"no client {client_id}")
    session.delete(row)
    audit.record(
        session,
        action="client.remove",
        outcome="success",
        actor=actor,
        subject=client_id,
        reason="removed",
    )


def update_client(
    session: Session,
    client_id: str,
    *,
    min_level: str | None = None,
    scope_levels: dict[str, str] | None = None,
    require_par: bool | None = None,
    allow_missing_pkce: bool | None = None,
    profile: str | None = None,
    actor: str = "admin",
) -> Client:
    """Change a client's minimum level and/or per-scope levels (acr URIs; ``""`` clears the
    minimum), its PAR and PKCE requirements and its profile. ``None`` leaves a setting as it is;
    ``scope_levels`` replaces the whole map."""
    row = session.get(Client, client_id)
    if row is None:
        raise ClientError(f"no client {client_id}")
    if min_level is not None and min_level and min_level not in LEVELS:
        raise ClientError(f"minimum level must be one of {', '.join(LEVELS)}")
    _check_scope_levels(scope_levels or {})
    new_profile = row.profile if profile is None else profile
    new_pkce = row.allow_missing_pkce if allow_missing_pkce is None else allow_missing_pkce
    _check_profile(new_profile, row.token_endpoint_auth_method, allow_missing_pkce=new_pkce)
    if new_profile == FAPI2 and require_par is False:
        raise ClientError(f"a {FAPI2} client pushes its authorization requests (FAPI 2.0 §5.3.2.2)")
    if profile is not None:
        row.profile = profile
        if profile == FAPI2:
            row.require_par = True
    row.allow_missing_pkce = new_pkce
    if min_level is not None:
        row.min_level = min_level or None
    if scope_levels is not None:
        row.scope_levels = json.dumps(scope_levels)
    if require_par is not None:
        row.require_par = require_par
    audit.record(
        session,
        action="client.update",
        outcome="success",
        actor=actor,
        subject=client_id,
        reason="settings changed",
        details={
            "min_level": row.min_level,
            "scope_levels": json.loads(row.scope_levels),
            "require_par": row.require_par,
            "allow_missing_pkce": row.allow_missing_pkce,
            "profile": row.profile,
        },
    )
    return row


def client_as_dict(c: Client) -> dict[str, object]:
    return {
        "client_id": c.client_id,
        "name": c.name,
        "redirect_uris": json.loads(c.redirect_uris),
        "post_logout_redirect_uris": json.loads(c.post_logout_redirect_uris),
        "grant_types": json.loads(c.grant_types),
        "scope": c.scope,
        "token_endpoint_auth_method": c.token_endpoint_auth_method,
        "backchannel_logout_uri": c.backchannel_logout_uri,
        "min_level": c.min_level,
        "scope_levels": json.loads(c.scope_levels),
        "subject_type": c.subject_type,
        "id_token_signed_response_alg": c.id_token_alg,
        "require_pushed_authorization_requests": bool(c.require_par),
        "allow_missing_pkce": bool(c.allow_missing_pkce),
        "profile": c.profile or None,
        "created_at": c.created_at.isoformat(),
    }
