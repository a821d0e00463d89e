"""The fast path of the code exchange at /token (RFC 6749 §4.1.3), in front of Authlib.

It answers one proven shape only: ``grant_type=authorization_code`` from a confidential client
authenticated by its registered method (``client_secret_basic``, ``client_secret_post`` or
``private_key_jwt``, idp.oauth.fast_paths), for an unused, unexpired code of that client whose
grant stands and is bound to no DPoP key, with the code's ``redirect_uri`` and its PKCE S256
verifier (RFC 7636 §4.6), and no DPoP proof or client certificate. Everything else, every refusal
included (a replayed code's family revocation, RFC 6749 §4.1.2, is Authlib's too), goes to Authlib
(idp.oauth.server.AuthorizationCodeGrant) with nothing changed: until it has decided to answer it
only reads (one row: the code with its grant and account), and its two writes (the assertion's
jti, the code's single use) are undone if either loses a race.

What it answers is made by the Authlib path's own parts: the token generator (RFC 9068 access
token, refresh token when the client has that grant), ``save_token`` (the refresh token row, the
audit entry) and the OpenID Connect extension's ``process_token`` (OIDC Core §3.1.3.6 ID token with
nonce, auth_time, acr, amr, at_hash, sid). ``tests/idp/test_fast_paths_code_differential.py``
proves the answers, rows and audit entries equal to Authlib's.
"""

from __future__ import annotations

import types
from typing import Any, cast

from authlib.oauth2.rfc7636.challenge import CODE_VERIFIER_PATTERN, compare_s256_code_challenge
from flask import Response, g
from flask import json as flask_json
from sqlalchemy import Table, bindparam, select, update
from werkzeug.wrappers import Request

from db import utcnow
from idp import uow
from idp.models import Account, AuthorizationCode, Grant
from idp.oauth import fapi2
from idp.oauth.fast_paths import (
    ASSERTION_FIELDS,
    FORM,
    authenticated_client,
    presents_assertion,
    single_values,
)
from idp.oauth.server import (
    CodeRecord,
    OAuthClient,
    OpenIDConnect,
    Principal,
    runtime_keys,
    save_token,
)
from idp.oauth.subjects import subject_for

GRANT_TYPE = "authorization_code"
FIELDS = frozenset({"grant_type", "code", "redirect_uri", "code_verifier", "client_id"})
SECRET_FIELDS = frozenset({"client_secret"})  # RFC 6749 §2.3.1 client_secret_post
MAX_CODE = 200  # as AuthorizationCodeGrant.query_authorization_code

_CODES = cast(Table, AuthorizationCode.__table__)
_GRANTS = cast(Table, Grant.__table__)
_ACCOUNTS = cast(Table, Account.__table__)
_PARTS = (("c_", _CODES), ("g_", _GRANTS), ("a_", _ACCOUNTS))
# the code, its grant and the grant's citizen in one statement (Core: no ORM objects built)
_SELECT_CODE = (
    select(*(col.label(prefix + col.name) for prefix, table in _PARTS for col in table.c))
    .select_from(
        _CODES.join(_GRANTS, _GRANTS.c.id == _CODES.c.grant_id).outerjoin(
            _ACCOUNTS, _ACCOUNTS.c.id == _GRANTS.c.account_id
        )
    )
    .where(_CODES.c.code_digest == bindparam("digest"))
)
# RFC 6749 §4.1.2 single use: only one UPDATE can flip used_at (as delete_authorization_code)
_CLAIM_CODE = (
    update(_CODES)
    .where(_CODES.c.code_digest == bindparam("digest"), _CODES.c.used_at.is_(None))
    .values(used_at=bindparam("now"))
)
_OIDC = OpenIDConnect()  # the ID token as the Authlib path's extension makes it


def _part(row: Any, prefix: str, table: Table) -> Any:
    """One table's columns of the joined row, read like its ORM row (attribute per column)."""
    m = row._mapping
    return types.SimpleNamespace(**{col.name: m[prefix + col.name] for col in table.c})


class _Exchange:
    """What Authlib's token request carries into save_token and the ID token."""

    def __init__(self, client: OAuthClient, user: Principal, code: CodeRecord) -> None:
        self.client = client
        self.user = user
        self.authorization_code = code
        self.payload = types.SimpleNamespace(grant_type=GRANT_TYPE)


def _redeemable(client: OAuthClient, params: dict[str, str]) -> tuple[Any, CodeRecord, Principal] | None:
    """The code, its record and its citizen when Authlib would redeem it, else None (reads only)."""
    code = params.get("code")
    if not code or len(code) > MAX_CODE:  # RFC 6749 §4.1.3: code REQUIRED
        return None
    digest = runtime_keys().token_digest(code)
    found = uow.db().connection().execute(_SELECT_CODE, {"digest": digest}).first()
    if found is None:  # RFC 6749 §5.2 invalid_grant: no such code
        return None
    row, grant = _part(found, "c_", _CODES), _part(found, "g_", _GRANTS)
    client_id = client.get_client_id()
    # RFC 6749 §4.1.3: the code was issued to the authenticated client
    if row.client_id != client_id or grant.client_id != client_id:
        return None
    if grant.revoked_at is not None:  # RFC 6749 §4.1.2: a revoked family's codes are void
        return None
    if row.used_at is not None:  # RFC 6749 §4.1.2: a replay (Authlib revokes the family)
        return None
    if row.expires_at <= utcnow():  # RFC 6749 §4.1.2: short-lived codes
        return None
    if grant.cnf_jkt or grant.cnf_x5t:  # RFC 9449 §10 / RFC 8705: bound to a key: Authlib's path
        return None
    # RFC 6749 §4.1.3: redirect_uri identical to the authorization request's, when it had one
    if row.redirect_uri and params.get("redirect_uri") != row.redirect_uri:
        return None
    if not _pkce_holds(row, params.get("code_verifier")):
        return None
    if grant.account_id is None or found.a_id is None:  # RFC 6749 §4.1.3: a citizen's grant
        return None
    account = _part(found, "a_", _ACCOUNTS)
    if account.disabled:  # the citizen may no longer sign in (idp.oauth.server.principal_for)
        return None
    record = CodeRecord(row, grant)
    principal = Principal(account, grant, subject_for(runtime_keys().subject, client.row, account.id))
    return digest, record, principal


def _pkce_holds(row: Any, verifier: str | None) -> bool:
    """RFC 7636 §4.6 with S256 (RFC 9700 §2.1.1: plain refused), as idp.oauth.server.PkceS256."""
    if not row.code_challenge:
        # RFC 9700 §4.8: no challenge, no verifier (a legacy client let off PKCE at /authorize)
        return not verifier
    if row.code_challenge_method != "S256" or not verifier:  # RFC 7636 §4.5: verifier REQUIRED
        return False
    if not CODE_VERIFIER_PATTERN.match(verifier):  # RFC 7636 §4.1: 43-128 unreserved characters
        return False
    # RFC 7636 §4.6: BASE64URL(SHA256(code_verifier)) == code_challenge
    return bool(compare_s256_code_challenge(verifier, row.code_challenge))


def code_exchange(req: Request, srv: Any, mtls_header: str) -> Response | None:
    """RFC 6749 §4.1.3/§4.1.4 and OIDC Core §3.1.3.3, or None: Authlib answers."""
    if req.query_string or req.mimetype != FORM:  # RFC 6749 §3.2: POST, form-encoded body
        return None
    if "DPoP" in req.headers:  # RFC 9449 §5 / §10: a proof binds the tokens: Authlib's path
        return None
    if mtls_header and mtls_header in req.headers:  # RFC 8705 §3: a certificate-bound token
        return None
    has_basic = "Authorization" in req.headers
    if has_basic:
        allowed = FIELDS
    else:
        allowed = FIELDS | (ASSERTION_FIELDS if presents_assertion(req) else SECRET_FIELDS)
    params = single_values(req, allowed)
    if params is None or params.get("grant_type") != GRANT_TYPE:  # RFC 6749 §4.1.3
        return None
    # RFC 6749 §3.2.1 / §4.1.3: a confidential client authenticates (its registered method)
    auth = authenticated_client(req, params, has_basic)
    if auth is None:
        return None
    client: OAuthClient = auth.client
    if not client.check_grant_type(GRANT_TYPE):  # RFC 6749 §5.2 unauthorized_client
        return None
    # FAPI 2.0 Security Profile §5.3.2.1: sender-constrained tokens only (no proof here: Authlib)
    if fapi2.sender_constraint_refusal(client.row, dpop=False, mtls=False) is not None:
        return None
    found = _redeemable(client, params)
    if found is None:
        return None
    digest, record, principal = found
    # decided: the writes, each one an atomic single use; a lost race undoes both
    if not auth.first_use():  # RFC 7523 §3 (7): the assertion's jti (inserted, or nothing)
        return None
    claimed = uow.db().connection().execute(_CLAIM_CODE, {"digest": digest, "now": utcnow()})
    if claimed.rowcount != 1:  # RFC 6749 §4.1.2: redeemed meanwhile: Authlib answers the replay
        uow.db().rollback()  # the jti recorded above too: as if this path had not run
        return None
    g.authenticated_client_id = client.get_client_id()
    request = _Exchange(client, principal, record)
    # RFC 6749 §4.1.4 / RFC 9068: the token as Authlib's grant makes it: the code's scope, a
    # refresh token when the client may refresh (RFC 6749 §1.5)
    token = srv.generate_token(
        grant_type=GRANT_TYPE,
        client=client,
        user=principal,
        scope=record.get_scope(),
        include_refresh_token=client.check_grant_type("refresh_token"),
    )
    save_token(token, request)  # the refresh token row and the audit entry, as Authlib's path
    # OIDC Core §3.1.3.3: an ID token when the scope holds openid (Authlib's extension hook)
    token = _OIDC.process_token(types.SimpleNamespace(request=request), (200, token, []))
    resp = Response(flask_json.dumps(token), status=200, mimetype="application/json")
    resp.headers.extend([("Cache-Control", "no-store"), ("Pragma", "no-cache")])  # RFC 6749 §5.1
    return resp
