"""Fast paths in front of Authlib for the hottest token requests.

Authlib stays the oracle (``tests/idp/test_fast_paths_differential.py`` runs generated valid and
hostile requests through both paths on identical database state and compares the answers, the
token claims, the database rows and the audit entries). A fast path answers only the requests it
is proven on: it *decides* nothing else. Whatever does not match its exact shape (another
parameter, a repeated one, a DPoP proof, a client certificate, a query string, another client
authentication method, any check that fails) is handed to Authlib unchanged, so that every refusal
(its status, ``error``, audit entry, any deliberate side effect) is Authlib's own. Before it hands
a request on, a fast path has changed nothing: it only reads until it has decided to answer; its
writes then (a private_key_jwt assertion's jti, a code's single use) are atomic single uses, and
one that loses a race to a concurrent request is rolled back with the others before Authlib takes
the request over.

Selected with ``fast_paths = true|false`` in cityid.toml (default true; false: Authlib alone).

Proven here: ``grant_type=client_credentials`` (RFC 6749 §4.4) with ``client_secret_basic``
(§2.3.1, HTTP Basic), ``client_secret_post`` (§2.3.1, form) or ``private_key_jwt`` (RFC 7523 §2.2,
OIDC Core §9), optional ``scope`` (§3.3); ``grant_type=authorization_code`` (RFC 6749 §4.1.3 with
PKCE S256, RFC 7636 §4.6, and the ID token of OIDC Core §3.1.3; idp.oauth.fast_code) with the same
three methods; and introspection (RFC 7662) of an active access token by the client it was issued
to, with the same three methods (any other token, an inactive one, another client's: Authlib,
which answers ``{"active": false}``); and userinfo (OIDC Core §5.3) for a valid, unbound Bearer
token with scope ``openid`` (every refusal, DPoP- and certificate-bound tokens, POST: the Flask
view); and ``grant_type=refresh_token`` (RFC 6749 §6, rotation per RFC 9700 §4.14.2) for an
unused, unexpired, unbound refresh token of the client it was issued to, authenticated with
either secret method or as a public client, with an optional narrowing ``scope``
(``idp.oauth.fast_refresh``, its oracle ``tests/idp/test_fast_paths_refresh_differential.py``:
reuse, grace-window retries, DPoP- and certificate-bound families and every refusal go to
Authlib; a lost claim hands over having changed nothing). Introspection and userinfo are served
before Flask (as /token is), since Flask's request machinery costs more than the work itself. A
private_key_jwt assertion is checked by the Authlib path's own ``PrivateKeyJwt`` in its read-only
mode; its jti is recorded (single use, RFC 7523 §3 (7)) only once the fast path answers.
``tests/idp/test_fast_paths_code_differential.py`` proves the code exchange and private_key_jwt.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6749.util import extract_basic_authorization, scope_to_list
from authlib.oauth2.rfc7523.client import ASSERTION_TYPE
from flask import Flask, Response, current_app, g
from flask import json as flask_json
from werkzeug.wrappers import Request

from idp import cors, uow
from idp.models import Grant
from idp.oauth import fapi2, fast_refresh, fast_revoke
from idp.oauth.server import (
    MAX_PARAM,
    AssertionUse,
    OAuthClient,
    PrivateKeyJwt,
    access_token_introspection,
    decode_access_token,
    principal_for,
    query_client,
    userinfo_claims,
)
from idp.runtime import runtime

log = logging.getLogger("cityid")

FORM = "application/x-www-form-urlencoded"
# RFC 7523 §2.2 (private_key_jwt; RFC 7521 §4.2 lets client_id come along)
ASSERTION_FIELDS = frozenset({"client_assertion_type", "client_assertion", "client_id"})
CC_BASIC = frozenset({"grant_type", "scope"})
CC_POST = frozenset({"grant_type", "scope", "client_id", "client_secret"})
CC_JWT = frozenset({"grant_type", "scope"}) | ASSERTION_FIELDS
TOKEN_HEADERS = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]  # RFC 6749 §5.1


def single_values(req: Request, allowed: frozenset[str]) -> dict[str, str] | None:
    """The form as one value per name, or None when it has another name, a repeated one
    (RFC 6749 §3.2: parameters MUST NOT be included more than once) or an oversized value."""
    form = req.form
    out: dict[str, str] = {}
    for name in form:
        values = form.getlist(name)
        if name not in allowed or len(values) != 1 or len(values[0]) > MAX_PARAM:
            return None
        out[name] = values[0]
    return out


def presents_assertion(req: Request) -> bool:
    """Whether the client authenticates with a JWT (RFC 7523 §2.2) rather than a secret."""
    return "Authorization" not in req.headers and (
        "client_assertion" in req.form or "client_assertion_type" in req.form
    )


@dataclass(frozen=True)
class Authenticated:
    """An authenticated client; ``assertion``: its private_key_jwt's jti, recorded (single use,
    RFC 7523 §3 (7)) only once the fast path answers."""

    client: OAuthClient
    assertion: AssertionUse | None = None

    def first_use(self) -> bool:
        """Record the assertion's jti (nothing for a secret); False: replayed meanwhile, nothing
        was written (the insert lost), Authlib decides."""
        return self.assertion is None or self.assertion.first_use()


def _assertion_client(params: dict[str, str]) -> Authenticated | None:
    """RFC 7523 §2.2 / §3, OIDC Core §9 private_key_jwt by the Authlib path's own checks
    (idp.oauth.server.PrivateKeyJwt: signature with the client's registered keys and the
    advertised algorithms, iss = sub = client_id, aud, exp, the jti unused), reading only."""
    # RFC 7523 §2.2: the assertion type and one assertion
    if params.get("client_assertion_type") != ASSERTION_TYPE or not params.get("client_assertion"):
        return None
    cfg = runtime().config
    check = PrivateKeyJwt(
        cfg.issuer, issuer_audience_only=cfg.client_assertion_issuer_audience_only, read_only=True
    )
    try:
        client = check(query_client, _Form(params))
    except OAuth2Error:
        return None
    if client is None or client.is_public or check.use is None:
        return None
    # RFC 7521 §4.2: a client_id sent along identifies the assertion's subject
    if "client_id" in params and params["client_id"] != client.get_client_id():
        return None
    return Authenticated(client, check.use)


@dataclass
class _Form:
    """What Authlib's client authentication reads of a request (its form) and sets (client)."""

    form: dict[str, str]
    client: Any = None


def authenticated_client(req: Request, params: dict[str, str], has_basic: bool) -> Authenticated | None:
    """The client, authenticated by its registered method, or None (Authlib decides)."""
    if not has_basic and ("client_assertion" in params or "client_assertion_type" in params):
        auth = _assertion_client(params)
        # RFC 6749 §2.3 / RFC 7591 §2 token_endpoint_auth_method: the registered method only
        if auth is None or not auth.client.check_endpoint_auth_method("private_key_jwt", "token"):
            return None
        return auth
    if has_basic:
        # RFC 6749 §2.3.1: HTTP Basic with the form-urlencoded id and secret (Authlib's parser,
        # the one the Authlib path uses)
        try:
            client_id, secret = extract_basic_authorization(req.headers)
        except ValueError:
            return None
        method = "client_secret_basic"
    else:
        # RFC 6749 §2.3.1: client_id and client_secret in the body
        client_id, secret = params.get("client_id"), params.get("client_secret")
        method = "client_secret_post"
    if not client_id or not secret:
        return None
    client = query_client(client_id)  # RFC 6749 §2.2: a registered, enabled client
    if client is None or client.is_public:
        return None
    # RFC 6749 §2.3 / RFC 7591 §2 token_endpoint_auth_method: the registered method only
    if not client.check_endpoint_auth_method(method, "token"):
        return None
    if not client.check_client_secret(secret):  # RFC 6749 §2.3.1, constant-time (idp.crypto.equal)
        return None
    if has_basic and "client_id" in params and params["client_id"] != client_id:
        return None  # RFC 6749 §2.3.1: a client_id sent along names the same client
    return Authenticated(client)


def secret_client(req: Request, params: dict[str, str], has_basic: bool) -> OAuthClient | None:
    """The client authenticated by its registered secret method (RFC 6749 §2.3.1), or None: the
    fast paths proven on secrets only (refresh, revocation) hand an assertion to Authlib."""
    auth = authenticated_client(req, params, has_basic)
    if auth is None or auth.assertion is not None:
        return None
    return auth.client


def client_credentials(req: Request, srv: Any, mtls_header: str) -> Response | None:
    """RFC 6749 §4.4.2/§4.4.3, or None: Authlib answers."""
    if req.query_string or req.mimetype != FORM:  # RFC 6749 §3.2: POST, form-encoded body
        return None
    if "DPoP" in req.headers:  # RFC 9449 §5: a proof binds the token: Authlib's path
        return None
    if mtls_header and mtls_header in req.headers:  # RFC 8705 §3: a certificate-bound token
        return None
    has_basic = "Authorization" in req.headers
    allowed = CC_BASIC if has_basic else CC_JWT if presents_assertion(req) else CC_POST
    params = single_values(req, allowed)
    if params is None or params.get("grant_type") != "client_credentials":  # RFC 6749 §4.4.2
        return None
    auth = authenticated_client(req, params, has_basic)
    if auth is None:
        return None
    client = auth.client
    if not client.check_grant_type("client_credentials"):  # RFC 6749 §5.2 unauthorized_client
        return None
    # FAPI 2.0 Security Profile §5.3.2.1: sender-constrained tokens only (no proof here: Authlib)
    if fapi2.sender_constraint_refusal(client.row, dpop=False, mtls=False) is not None:
        return None
    # RFC 6749 §3.3 / §5.2 invalid_scope: only scopes the client is registered for (Authlib refuses
    # the others, never narrowing them silently)
    if not set(scope_to_list(params.get("scope")) or []) <= set(client.row.scope.split()):
        return None
    if not auth.first_use():  # RFC 7523 §3 (7): the assertion's jti, now used
        return None
    client_id = client.get_client_id()
    g.authenticated_client_id = client_id
    # RFC 6749 §3.3 / §4.4.3: the granted scope, through the same generator as Authlib's path
    # (RFC 9068 JWT, ES256; the client's allowed scopes); no refresh token (§4.4.3)
    token = srv.generate_token(
        grant_type="client_credentials",
        client=client,
        user=None,
        scope=params.get("scope"),
        include_refresh_token=False,
    )
    uow.record(  # as idp.oauth.server.save_token for a machine
        action="token.issue",
        outcome="success",
        actor=client_id,
        subject=client_id,
        reason="client_credentials",
        details={"scope": token.get("scope", "")},
    )
    resp = Response(flask_json.dumps(token), status=200, mimetype="application/json")
    resp.headers.extend(TOKEN_HEADERS)
    return resp


def token(req: Request, srv: Any, mtls_header: str) -> Response | None:
    """A fast answer at /token, or None: Authlib answers."""
    if req.mimetype == FORM and req.form.get("grant_type") == "client_credentials":
        return client_credentials(req, srv, mtls_header)
    if req.mimetype == FORM and req.form.get("grant_type") == "authorization_code":
        from idp.oauth import fast_code  # builds on this module's client authentication

        return fast_code.code_exchange(req, srv, mtls_header)
    if req.mimetype == FORM and req.form.get("grant_type") == "refresh_token":  # idp.oauth.fast_refresh
        return fast_refresh.refresh(req, srv, mtls_header)
    return None


INTROSPECT_BASIC = frozenset({"token", "token_type_hint"})
INTROSPECT_POST = frozenset({"token", "token_type_hint", "client_id", "client_secret"})
INTROSPECT_JWT = frozenset({"token", "token_type_hint"}) | ASSERTION_FIELDS
INTROSPECT_PATH = "/introspect"
MAX_BODY = 64 * 1024


def introspection(req: Request) -> Response | None:
    """RFC 7662 §2.1/§2.2 for an active access token of the authenticated client, or None."""
    if req.query_string or req.mimetype != FORM:  # RFC 7662 §2.1: POST, form-encoded
        return None
    has_basic = "Authorization" in req.headers
    jwt = not has_basic and presents_assertion(req)
    params = single_values(req, INTROSPECT_BASIC if has_basic else INTROSPECT_JWT if jwt else INTROSPECT_POST)
    if params is None or "token" not in params:  # RFC 7662 §2.1: token is REQUIRED
        return None
    if params.get("token_type_hint", "access_token") != "access_token":  # RFC 7662 §2.1 hint
        return None
    # RFC 7662 §2.1: the protected resource authenticates (the Introspection endpoint's
    # confidential methods)
    auth = authenticated_client(req, params, has_basic)
    if auth is None:
        return None
    valid = decode_access_token(uow.db(), params["token"])  # RFC 9068 §4, not revoked
    if valid is None:
        return None
    if valid.claims.get("client_id") != auth.client.get_client_id():  # RFC 7662 §4: its own tokens
        return None
    if not auth.first_use():  # RFC 7523 §3 (7): the assertion's jti, now used
        return None
    resp = Response(
        flask_json.dumps(access_token_introspection(valid.claims)), status=200, mimetype="application/json"
    )
    resp.headers.extend(TOKEN_HEADERS)  # RFC 7662 §2.2 JSON; no caching of a token's state
    return resp


def userinfo(req: Request) -> Response | None:
    """OIDC Core §5.3 for a valid Bearer access token with scope openid, or None: the Flask view
    (idp.views.oidc.userinfo) answers everything else (refusals and their audit entries, DPoP- and
    certificate-bound tokens, POST)."""
    if req.method != "GET" or req.query_string or "DPoP" in req.headers:
        return None
    scheme, _, token = req.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:  # RFC 6750 §2.1
        return None
    valid = decode_access_token(uow.db(), token.strip())  # RFC 9068 §4, not revoked
    if valid is None:
        return None
    claims = valid.claims
    if claims.get("cnf"):  # RFC 9449 §7 / RFC 8705 §3: a sender-constrained token: the view checks it
        return None
    if "openid" not in str(claims.get("scope", "")).split():  # OIDC Core §5.3.1
        return None
    gid = claims.get("gid")
    s = uow.db()
    grant = s.get(Grant, gid) if gid else None
    principal = principal_for(s, grant) if grant else None
    if principal is None:
        return None
    resp = cast(
        Response, current_app.json.response(dict(userinfo_claims(principal, claims.get("scope", ""))))
    )
    resp.headers["Cache-Control"] = "no-store"  # OIDC Core §5.3.2 personal data
    resp.headers.extend(cors.SIMPLE)  # a service's front end reads it (idp.cors)
    return resp


def revocation(req: Request) -> Response | None:
    """RFC 7009 (idp.oauth.fast_revoke), or None: the Flask view."""
    return fast_revoke.revocation(req)


# (method, path) -> the name of its fast path in this module (looked up per request)
HANDLERS = {
    ("POST", INTROSPECT_PATH): "introspection",
    ("GET", "/userinfo"): "userinfo",
    ("POST", "/revoke"): "revocation",  # idp.oauth.fast_revoke
}


class BeforeFlask:
    """WSGI middleware: POST /introspect, GET /userinfo and POST /revoke through their fast paths
    where proven, else Flask (whose views run Authlib's endpoint / the resource checks) with the
    body intact."""

    def __init__(self, app: Flask, finish: Callable[[Response], Response]) -> None:
        self.app = app
        self.wrapped = app.wsgi_app
        self.finish = finish  # the headers every response gets (idp.app)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        name = HANDLERS.get((environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")))
        if name is None or not self.app.extensions["cityid"].config.fast_paths:
            return self.wrapped(environ, start_response)
        body = b""
        if environ.get("REQUEST_METHOD") == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or "0")
            except ValueError:
                return self.wrapped(environ, start_response)
            if not 0 < length <= MAX_BODY:
                return self.wrapped(environ, start_response)
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)
        resp = None
        with self.app.app_context():
            try:
                resp = globals()[name](Request(environ))
                uow.finish(resp is not None)  # a revocation commits with its audit entry; the others read
            except Exception:  # whatever went wrong, the Authlib / Flask path decides
                log.debug("fast path handed on", exc_info=True)
                uow.abandon()
                resp = None
        if resp is None:
            environ["wsgi.input"] = io.BytesIO(body)  # Flask reads the body again
            return self.wrapped(environ, start_response)
        resp = self.finish(resp)
        data = resp.get_data()
        resp.headers["Content-Length"] = str(len(data))
        start_response(resp.status, resp.headers.to_wsgi_list())
        return [data]
