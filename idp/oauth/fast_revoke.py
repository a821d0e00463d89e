"""Fast path for POST /revoke (RFC 7009), served before Flask like /introspect.

Authlib's RevocationEndpoint (``idp.oauth.server.Revocation``) stays the oracle
(``tests/idp/test_fast_paths_revoke_differential.py``). This path answers a client that
authenticates with ``client_secret_basic`` or ``client_secret_post``, sends ``token`` and at most
``token_type_hint=access_token|refresh_token``, once each. It finds the token as
``idp.oauth.server.find_token`` does (the hint says where to look first, RFC 7009 §2.1) and:

- an active access token of this client: its jti is remembered as revoked (RFC 7009 §2.1);
- a refresh token of this client: its grant (the token family) is revoked with its access tokens
  and kept answers (``idp.oauth.server.revoke_grant``, RFC 7009 §2.1 SHOULD);
- any other token (unknown, inactive, another client's): nothing happens (RFC 7009 §2.2: the
  server responds with 200 for an invalid token, and §2.1: another client's token is ignored).

Each answer is ``200 {}``; the audit entry of a revocation is the Authlib path's. Everything else
(another authentication method, a failing one, another parameter, a repeated one, an unknown
hint, a query string) is handed to the Flask view unchanged, having changed nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

from flask import Response
from sqlalchemy import Table, bindparam, insert, select
from werkzeug.wrappers import Request

from idp import cors, uow
from idp.models import Grant, RefreshToken, RevokedAccessToken
from idp.oauth import fast_paths
from idp.oauth.server import decode_access_token, revoke_grant, runtime_keys

REVOKE_BASIC = frozenset({"token", "token_type_hint"})
REVOKE_POST = frozenset({"token", "token_type_hint", "client_id", "client_secret"})
HINTS = (None, "access_token", "refresh_token")

_RT = cast(Table, RefreshToken.__table__)
_GRANTS = cast(Table, Grant.__table__)
_REVOKED = cast(Table, RevokedAccessToken.__table__)
# idp.oauth.server._refresh_token: the token's grant (and whose it is), as one row
_SELECT_FAMILY = (
    select(_GRANTS.c.id, _GRANTS.c.client_id)
    .select_from(_RT.join(_GRANTS, _GRANTS.c.id == _RT.c.grant_id))
    .where(_RT.c.token_digest == bindparam("digest"))
)
_INSERT_REVOKED = insert(_REVOKED)


def revocation(req: Request) -> Response | None:
    """RFC 7009 §2.1/§2.2 for a client authenticated by its secret, or None: the Flask view."""
    if req.query_string or req.mimetype != fast_paths.FORM:  # RFC 7009 §2.1: POST, form-encoded
        return None
    has_basic = "Authorization" in req.headers
    params = fast_paths.single_values(req, REVOKE_BASIC if has_basic else REVOKE_POST)
    if params is None or "token" not in params:  # RFC 7009 §2.1: token is REQUIRED
        return None
    hint = params.get("token_type_hint")
    if hint not in HINTS:  # RFC 7009 §2.1: another hint (Authlib searches every type)
        return None
    # RFC 7009 §2.1: the client authenticates (its registered secret method; the others: Authlib)
    client = fast_paths.secret_client(req, params, has_basic)
    if client is None:
        return None
    client_id = client.get_client_id()
    token = params["token"]
    s = uow.db()
    # RFC 7009 §2.1: the hint says where to look first; a token not found there is looked for
    # under the other type (idp.oauth.server.find_token)
    order = (
        ("refresh_token", "access_token") if hint == "refresh_token" else ("access_token", "refresh_token")
    )
    for kind in order:
        if kind == "access_token":
            valid = decode_access_token(s, token)  # RFC 9068 §4, not revoked, its grant alive
            if valid is None:
                continue
            if valid.claims.get("client_id") != client_id:
                break  # RFC 7009 §2.1: not issued to this client: ignored
            jti = valid.claims["jti"]
            exp = dt.datetime.fromtimestamp(int(valid.claims["exp"]), dt.UTC)
            s.connection().execute(_INSERT_REVOKED, {"jti": jti, "expires_at": exp})
            _audit(client_id, jti, kind)
            break
        row = (
            s.connection().execute(_SELECT_FAMILY, {"digest": runtime_keys().token_digest(token)}).first()
            if len(token) <= 200
            else None
        )
        if row is None:
            continue
        if row.client_id == client_id:  # RFC 7009 §2.1: another client's token is ignored
            # RFC 7009 §2.1: revoking a refresh token SHOULD revoke the grant's access tokens
            revoke_grant(s, row.id, "revoked by client (RFC 7009)")
            _audit(client_id, row.id, kind)
        break
    resp = Response(b"{}", status=200, mimetype="application/json")  # RFC 7009 §2.2
    resp.headers.extend(fast_paths.TOKEN_HEADERS)
    resp.headers.extend(cors.SIMPLE)  # a browser-based client revokes too (idp.cors)
    return resp


def _audit(client_id: str, subject: str, kind: str) -> None:
    uow.record(  # as idp.oauth.server.Revocation.revoke_token
        action="token.revoke",
        outcome="success",
        actor=client_id,
        subject=subject,
        reason=kind,
    )
