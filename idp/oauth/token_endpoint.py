"""The token endpoint (RFC 6749 §3.2), served in front of Flask's request handling.

Every service calls `/token` (machine-to-machine tokens, code exchange, refresh), so it is the
hottest endpoint of the provider. Flask's per-request machinery (request context, routing, the
page hooks: locale, cookies, templates) costs more than the token work itself, and none of it is
needed here: no cookies, no pages. This WSGI middleware answers `/token` with the same Authlib
server, the same unit of work (`idp.uow`: state commits only on success, audit always) and the same
security headers, inside a Flask *application* context (`g`, `current_app`) without a request
context. Every other path goes to Flask unchanged.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from authlib.oauth2.rfc6749.util import extract_basic_authorization
from flask import Flask, Response, g
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request

from db import utcnow
from idp import cors, retry, uow
from idp.insights import funnel
from idp.oauth import dpop, fast_paths, mtls
from idp.oauth.server import endpoint_proof, oversized, with_dpop_nonce
from idp.request import SafeAuthorization
from idp.runtime import runtime

log = logging.getLogger("cityid")

PATH = "/token"
MAX_BODY = 64 * 1024  # a token request is a few hundred bytes; a client assertion a few KiB


class TokenRequest(SafeAuthorization):
    max_content_length = MAX_BODY
    max_form_memory_size = MAX_BODY
    max_form_parts = 64


def _json(status: int, body: dict[str, Any]) -> Response:
    resp = Response(json.dumps(body), status=status, mimetype="application/json")
    resp.headers["Cache-Control"] = "no-store"  # RFC 6749 §5.1 (errors too: §5.2)
    resp.headers["Pragma"] = "no-cache"
    return resp


def _claimed_client_id(req: Request) -> str:
    """Who the request says it is (RFC 6749 §2.3.1 Basic or form, RFC 7523 §3 (2) the
    assertion's sub); unverified: for the audit entry's details only."""
    if req.values.get("client_id"):
        return str(req.values["client_id"])[:64]
    if req.headers.get("Authorization", "")[:6].lower() == "basic ":
        try:  # werkzeug's req.authorization raises on credentials that are no base64 of UTF-8
            return (extract_basic_authorization(req.headers)[0] or "")[:64]
        except (ValueError, UnicodeError):
            return ""
    assertion = req.values.get("client_assertion", "")
    if assertion.count(".") == 2 and len(assertion) < 8192:
        try:
            payload = assertion.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, TypeError):
            return ""
        sub = claims.get("sub") if isinstance(claims, dict) else None
        if isinstance(sub, str):
            return sub[:64]
    return ""


def _refusal(req: Request, reason: str) -> None:
    uow.record(
        action="token.refuse",
        outcome="denied",
        # the actor is the client only once it has authenticated; before, what it claims is a
        # detail, never the actor
        actor=g.get("authenticated_client_id") or "anonymous",
        subject="",
        reason=reason[:300],
        details={"claimed_client_id": _claimed_client_id(req)},
    )


def token_response(req: Request, srv: Any) -> Response:
    """RFC 6749 §3.2 with DPoP (RFC 9449) and certificate binding (RFC 8705) in front of Authlib."""
    if oversized(req):
        return _json(400, {"error": "invalid_request", "error_description": "a parameter is too long"})
    rt = runtime()
    proof = None
    try:
        cert = mtls.presented(req.headers, rt.config.mtls_client_cert_header)
        if cert is not None:  # RFC 8705 §3: bind the tokens to this device certificate
            g.mtls = mtls.device_certificate(uow.db(), cert, utcnow())
        proof = endpoint_proof(req.headers, PATH)
        if proof is not None:
            g.dpop = proof
    except mtls.MtlsError as exc:
        _refusal(req, f"mtls: {exc.description}")
        return _json(401, {"error": exc.error, "error_description": exc.description})
    except dpop.DpopError as exc:
        _refusal(req, f"{exc.error}: {exc.description}")
        # RFC 9449 §5
        return with_dpop_nonce(_json(400, {"error": exc.error, "error_description": exc.description}))
    resp: Response = srv.create_token_response(req)
    if proof is not None:
        with_dpop_nonce(resp)  # RFC 9449 §8.2: a fresh one
    if resp.status_code >= 400:
        body = resp.get_json(silent=True) or {}
        _refusal(req, f"{body.get('error')}: {body.get('error_description', '')}")
    return resp


class TokenEndpoint:
    """WSGI middleware: `/token` here, everything else to the wrapped Flask WSGI app."""

    def __init__(self, app: Flask, finish: Callable[[Response], Response]) -> None:
        self.app = app
        self.wrapped = app.wsgi_app
        self.finish = finish  # the headers every response gets (idp.app)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            return self.wrapped(environ, start_response)
        resp = self.finish(self.handle(TokenRequest(environ)))
        # A token answer is a few hundred bytes in memory: hand the server one bytes object (the
        # WSGI iterator of a werkzeug Response costs the server more per request than the body).
        body = resp.get_data()
        resp.headers["Content-Length"] = str(len(body))
        start_response(resp.status, resp.headers.to_wsgi_list())
        return [body]

    def handle(self, req: TokenRequest) -> Response:
        if cors.is_preflight(req.method, req.headers):
            resp = Response(status=204)
            resp.headers.extend(cors.PREFLIGHT)
            return resp
        resp = self._handle(req)
        resp.headers.extend(cors.SIMPLE)
        return resp

    def _handle(self, req: TokenRequest) -> Response:
        if req.method != "POST":  # RFC 6749 §3.2
            resp = _json(405, {"error": "invalid_request", "error_description": "use POST"})
            resp.headers["Allow"] = "POST"
            return resp
        for attempt in (1, 2):
            with self.app.app_context():
                try:
                    srv = self.app.extensions["cityid_oauth"]
                    cfg = runtime().config
                    # Authlib answers whatever a fast path is not proven on (idp.oauth.fast_paths)
                    fast = fast_paths.token(req, srv, cfg.mtls_client_cert_header) if cfg.fast_paths else None
                    resp = fast if fast is not None else token_response(req, srv)
                    if resp.status_code < 400:  # idp.insights: how many tokens by grant, never who
                        grant = str(req.form.get("grant_type", ""))
                        funnel.token_issued(service=g.get("authenticated_client_id") or "", grant_type=grant)
                except HTTPException as exc:  # body too large, too many parts
                    return _refused(exc.code or 400, "invalid_request", exc.description or "bad request")
                except UnicodeDecodeError:
                    return _refused(400, "invalid_request", "invalid characters")
                except Exception as exc:
                    if attempt == 1 and retry.may_repeat(exc):  # nothing stored yet: once more
                        uow.abandon()
                        log.warning("token endpoint lost its database connection: request repeated once")
                        retry.wait_for_database(self.app.extensions["cityid"].engine)
                        continue
                    log.exception("token endpoint failed")
                    return _refused(500, "server_error", "")
                try:
                    uow.finish(resp.status_code < 400)  # nothing is answered before it is stored
                except Exception as exc:
                    failed_commit = g.pop("_commit_failed", False)
                    if attempt == 1 and failed_commit and retry.may_repeat(exc):  # lost before COMMIT
                        uow.abandon()
                        log.warning("token endpoint lost its database connection: request repeated once")
                        retry.wait_for_database(self.app.extensions["cityid"].engine)
                        continue
                    log.exception("token endpoint could not commit")
                    # its audit records are still queued: written on their own by the rollback path
                    return _refused(500, "server_error", "")
                return resp
        raise AssertionError("unreachable")


def _refused(status: int, error: str, description: str) -> Response:
    """Roll back (audit records are still written) and answer with an RFC 6749 §5.2 error."""
    try:
        uow.finish(False)
    except Exception:
        log.exception("token endpoint could not write its audit records")
    body = {"error": error, "error_description": description} if description else {"error": error}
    return _json(status, body)
