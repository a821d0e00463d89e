"""Fast path for ``grant_type=refresh_token`` (RFC 6749 §6, rotation per RFC 9700 §4.14.2).

Authlib's RefreshTokenGrant (``idp.oauth.server.RefreshTokenGrant``) stays the oracle
(``tests/idp/test_fast_paths_refresh_differential.py``). This path answers one shape only: a
valid, unexpired, unused refresh token of an unrevoked grant that is bound to no DPoP key and no
certificate, presented by the client it was issued to, authenticated with ``client_secret_basic``
or ``client_secret_post`` (a confidential client) or as a public client (``none``, RFC 6749
§2.1), with an optional narrowing ``scope`` (§6). Everything else goes to Authlib unchanged:
reuse (a retry within the grace window, or a replay that revokes the family), DPoP proofs,
client certificates, FAPI 2.0 clients, every refusal.

It does what the Authlib path does, in fewer statements and without ORM objects: one read of the
token, its grant and its account (one row), the claim (``used_at``, set only where it is still
NULL: the same atomic UPDATE as ``RefreshTokenGrant._claim``, here with the kept answer of
``_keep_answer`` in the same statement), the clearing of the grant's older kept answers, the new
refresh token row and the audit entry of ``save_token``. The tokens come from the same
generator (``srv.generate_token``). A lost claim (a concurrent request rotated the token since
it was read: the UPDATE matches no row) has changed nothing and queued nothing; the request goes
to Authlib in the same transaction, which now reads the token as used (on PostgreSQL the claim
waited for the winner's commit; SQLite's BEGIN IMMEDIATE lets no one in between) and answers as
after its own lost claim: the winner's tokens again within the grace window, else a replay.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, cast

from authlib.oauth2.rfc6749.util import scope_to_list
from flask import Response, g
from flask import json as flask_json
from sqlalchemy import Table, bindparam, insert, select, update
from werkzeug.wrappers import Request

from db import utcnow
from idp import uow
from idp.models import Account, Grant, RefreshToken
from idp.oauth import fapi2, fast_paths, rotation
from idp.oauth.server import OAuthClient, Principal, query_client, runtime_keys
from idp.oauth.subjects import subject_for
from idp.runtime import runtime

REFRESH_BASIC = frozenset({"grant_type", "refresh_token", "scope"})
REFRESH_POST = frozenset({"grant_type", "refresh_token", "scope", "client_id", "client_secret"})

_RT = cast(Table, RefreshToken.__table__)
_GRANTS = cast(Table, Grant.__table__)
_ACCOUNTS = cast(Table, Account.__table__)

# the token, its grant and the grant's citizen in one row (idp.oauth.server reads them as three
# ORM objects: authenticate_refresh_token, principal_for)
_SELECT_TOKEN = (
    select(
        _GRANTS,
        _RT.c.scope.label("rt_scope"),
        _RT.c.expires_at.label("rt_expires_at"),
        _RT.c.used_at.label("rt_used_at"),
        _ACCOUNTS.c.disabled.label("account_disabled"),
    )
    .select_from(
        _RT.join(_GRANTS, _GRANTS.c.id == _RT.c.grant_id).outerjoin(
            _ACCOUNTS, _ACCOUNTS.c.id == _GRANTS.c.account_id
        )
    )
    .where(_RT.c.token_digest == bindparam("digest"))
)
# RefreshTokenGrant._claim (+ _keep_answer): only one UPDATE can flip used_at
_CLAIM = (
    update(_RT)
    .where(_RT.c.token_digest == bindparam("digest"), _RT.c.used_at.is_(None))
    .values(used_at=bindparam("now"), answer_sealed=bindparam("sealed"))
)
# ... and the answers kept for the tokens before this one: their successor is used now
_CLEAR_OLDER = (
    update(_RT)
    .where(
        _RT.c.grant_id == bindparam("gid"),
        _RT.c.token_digest != bindparam("digest"),
        _RT.c.answer_sealed.is_not(None),
    )
    .values(answer_sealed=None)
)
_INSERT = insert(_RT)


class _Account:
    """What the access token generator and the audit entry read of the account (its id)."""

    __slots__ = ("id",)

    def __init__(self, account_id: str) -> None:
        self.id = account_id


def _client(req: Request, params: dict[str, str], has_basic: bool) -> OAuthClient | None:
    """The client: a confidential one by its registered secret method, or a public one by its
    client_id alone (RFC 6749 §2.1, ``none``), or None (Authlib decides)."""
    if not has_basic and "client_secret" not in params:
        client = query_client(params.get("client_id", ""))  # RFC 6749 §2.2
        # RFC 6749 §2.1 / RFC 7591 §2: a public client, registered for "none" at /token
        if client is None or not client.is_public or not client.check_endpoint_auth_method("none", "token"):
            return None
        return client
    return fast_paths.secret_client(req, params, has_basic)


def refresh(req: Request, srv: Any, mtls_header: str) -> Response | None:
    """RFC 6749 §6 for the proven shape, or None: Authlib answers (having seen nothing change)."""
    if req.query_string or req.mimetype != fast_paths.FORM:  # RFC 6749 §3.2: POST, form-encoded body
        return None
    if "DPoP" in req.headers:  # RFC 9449 §5: a proof binds (or must match) the tokens: Authlib
        return None
    if mtls_header and mtls_header in req.headers:  # RFC 8705 §3/§4: certificate binding: Authlib
        return None
    has_basic = "Authorization" in req.headers
    allowed = REFRESH_BASIC if has_basic else REFRESH_POST
    params = fast_paths.single_values(req, allowed)  # RFC 6749 §3.2: no parameter twice; none oversized
    if params is None or params.get("grant_type") != "refresh_token":  # RFC 6749 §6
        return None
    token_value = params.get("refresh_token")
    if not token_value or len(token_value) > 200:  # RFC 6749 §6: refresh_token REQUIRED
        return None
    client = _client(req, params, has_basic)
    if client is None:
        return None
    if not client.check_grant_type("refresh_token"):  # RFC 6749 §5.2 unauthorized_client
        return None
    # FAPI 2.0 Security Profile §5.3.2.1: sender-constrained tokens only (no proof here: Authlib)
    if fapi2.sender_constraint_refusal(client.row, dpop=False, mtls=False) is not None:
        return None
    digest = runtime_keys().token_digest(token_value)
    conn = uow.db().connection()
    row = conn.execute(_SELECT_TOKEN, {"digest": digest}).first()
    if row is None or row.revoked_at is not None:  # RFC 6749 §5.2 invalid_grant: unknown, revoked
        return None
    if row.rt_used_at is not None:  # RFC 9700 §4.14.2: reuse (grace retry or replay): Authlib
        return None
    if row.rt_expires_at <= utcnow():  # RFC 6749 §5.2 invalid_grant: expired
        return None
    if row.cnf_jkt or row.cnf_x5t:  # RFC 9449 §5 / RFC 8705 §4: a bound family: Authlib checks it
        return None
    client_id = client.get_client_id()
    if row.client_id != client_id:  # RFC 6749 §6: issued to the authenticated client only
        return None
    asked = params.get("scope") or ""
    # RFC 6749 §6: the scope MUST NOT include any scope not originally granted (Authlib refuses
    # a scope beyond the token's with invalid_scope)
    if asked and not (row.rt_scope and set(scope_to_list(row.rt_scope)) >= set(scope_to_list(asked))):
        return None
    if row.account_id is None or row.account_disabled is None or row.account_disabled:
        return None  # no citizen to act for (principal_for): Authlib's invalid_request
    grant = cast(Grant, row)
    user = Principal(
        account=cast(Account, _Account(row.account_id)),
        grant=grant,
        sub=subject_for(runtime_keys().subject, client.row, row.account_id),
    )
    # RFC 6749 §6 / §5.1: new access and refresh token (rotation) from the same generator
    token: dict[str, Any] = srv.generate_token(
        grant_type="refresh_token",
        client=client,
        user=user,
        scope=asked or row.rt_scope,
        include_refresh_token=True,
    )
    now = utcnow()
    sealed = _sealed_answer(client, digest, token, asked, row.client_id)
    if conn.execute(_CLAIM, {"digest": digest, "now": now, "sealed": sealed}).rowcount != 1:
        # a concurrent request claimed it first: this UPDATE matched no row, nothing of ours was
        # written or queued, and Authlib takes the request over in the same transaction, where
        # it finds the token used and answers as after its own lost claim (a retry within the
        # grace window gets the winner's answer; else the family is revoked)
        return None
    conn.execute(_CLEAR_OLDER, {"gid": row.id, "digest": digest})
    days = runtime().config.refresh_token_lifetime_days
    conn.execute(  # idp.oauth.server.save_token: the successor keeps the replaced token's scope
        _INSERT,
        {
            "token_digest": runtime_keys().token_digest(token["refresh_token"]),
            "grant_id": row.id,
            "scope": row.rt_scope,
            "created_at": now,
            "expires_at": now + dt.timedelta(days=days),
            "used_at": None,
            "answer_sealed": None,
        },
    )
    uow.record(  # as idp.oauth.server.save_token
        action="token.issue",
        outcome="success",
        actor=client_id,
        subject=row.account_id,
        reason="refresh_token",
        details={"scope": token.get("scope", "")},
    )
    g.authenticated_client_id = client_id
    resp = Response(flask_json.dumps(token), status=200, mimetype="application/json")
    resp.headers.extend(fast_paths.TOKEN_HEADERS)
    return resp


def _sealed_answer(
    client: OAuthClient, digest: str, token: dict[str, Any], asked: str, client_id: str
) -> bytes | None:
    """RefreshTokenGrant._keep_answer: the answer kept for a retry within the grace window."""
    if runtime().config.refresh_token_grace_seconds <= 0:
        return None  # no window: nothing kept
    if not rotation.eligible(not client.is_public, None, None):
        return None  # RFC 9700 §4.14.2: no window for a public client's unbound tokens
    answer = rotation.RotationAnswer(
        token=dict(token),
        issued_at=int(time.time()),
        client_id=client_id,
        jkt=None,
        x5t=None,
        scope_asked=asked,
    )
    return rotation.seal(runtime_keys().token_answer, digest, answer)
