"""OpenID Connect endpoints. Views call the Authlib server and render; nothing more."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import time
from typing import Any
from urllib.parse import urlencode

import flask_babel
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import AccessDeniedError, InvalidRequestError
from authlib.oidc.core.errors import ConsentRequiredError, LoginRequiredError
from authlib.oidc.rpinitiated import EndSessionEndpoint
from flask import Blueprint, Response, current_app, g, jsonify, redirect, render_template, request
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from joserfc import jws
from joserfc.errors import JoseError
from sqlalchemy import select
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from db import utcnow
from idp import browser, consents, levels, static_docs, uow
from idp.config import LEVEL_HIGH, LEVEL_LOW, LEVEL_SUBSTANTIAL
from idp.crypto import equal
from idp.i18n import DEFAULT, LOCALES, best_of
from idp.insights import funnel
from idp.models import Consent, Grant
from idp.oauth import backchannel, dpop, fapi2, par
from idp.oauth.errors import safe_description
from idp.oauth.server import (
    ALL_AUTH,
    ASSERTION_ALGORITHMS,
    OAuthClient,
    endpoint_proof,
    key_cache,
    oversized,
    principal_for,
    query_client,
    with_dpop_nonce,
)
from idp.runtime import runtime
from policies import AskStep, Refused, Satisfied, Step, next_step, required_level

bp = Blueprint("oidc", __name__)

SCOPES = ["openid", "profile", "email", "offline_access", "eid", "smartcard:enroll", "library_card"]


def server() -> Any:
    return current_app.extensions["cityid_oauth"]


# --------------------------------------------------------------------------- discovery


def discovery_metadata(rt_cfg: Any) -> dict[str, Any]:
    """The discovery document (OIDC Discovery §3, RFC 8414 §2): fixed by the configuration, so
    computed once per process and served as bytes (idp.static_docs)."""
    iss = rt_cfg.issuer
    scope_levels = rt_cfg.scope_levels
    meta = {
        # OIDC Discovery §3 / RFC 8414 §2
        "issuer": iss,
        "authorization_endpoint": f"{iss}/authorize",
        "token_endpoint": f"{iss}/token",
        "userinfo_endpoint": f"{iss}/userinfo",
        "jwks_uri": f"{iss}/jwks.json",
        "introspection_endpoint": f"{iss}/introspect",
        "revocation_endpoint": f"{iss}/revoke",
        "end_session_endpoint": f"{iss}/logout",
        "scopes_supported": sorted(set(SCOPES) | set(scope_levels)),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["pairwise", "public"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        # userinfo_signing_alg_values_supported: omitted, userinfo answers plain JSON only (OIDC
        # Discovery §3: an empty list is no valid value)
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none",
        ],
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ],
        # RFC 8414 §2: present when private_key_jwt is listed for the endpoint
        "introspection_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "revocation_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none",
        ],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "acr",
            "amr",
            "sid",
            "email",
            "email_verified",
            "locale",
        ],
        "acr_values_supported": [LEVEL_LOW, LEVEL_SUBSTANTIAL, LEVEL_HIGH],
        "claims_parameter_supported": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,  # OIDC request_uri (fetched by us): no
        # RFC 9126 §5: pushed authorization requests
        "pushed_authorization_request_endpoint": f"{iss}/par",
        "require_pushed_authorization_requests": False,
        "authorization_response_iss_parameter_supported": True,  # RFC 9207 §3
        # what each client profile needs (cityid's own field; a client's profile is set by the
        # city's IT, see docs/fapi2.md): FAPI 2.0 clients push their requests, authenticate with
        # private_key_jwt and get DPoP- or certificate-bound tokens only
        "cityid_client_profiles": fapi2.profiles_metadata(),
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": False,
        "ui_locales_supported": list(LOCALES),
        "dpop_signing_alg_values_supported": dpop.ALGORITHMS,  # RFC 9449 §5.1
        # RFC 8705 §3.3: device certificates via the TLS-terminating proxy, when configured
        "tls_client_certificate_bound_access_tokens": bool(rt_cfg.mtls_client_cert_header),
        # OpenID Connect for Identity Assurance 1.0 §8: verified eID attributes (scope `eid`)
        "verified_claims_supported": True,
        "trust_frameworks_supported": ["eidas", "de_cityid_simulation"],
        "evidence_supported": ["electronic_record"],
        "claims_in_verified_claims_supported": [
            "given_name",
            "family_name",
            "birthdate",
            "place_of_birth",
            "nationalities",
        ],
        "prompt_values_supported": ["none", "login", "consent"],
    }
    return meta


# Normally answered by idp.static_docs before Flask; these views serve what it hands on (a stale
# key cache, another method), with the same bytes.
@bp.get("/.well-known/openid-configuration")
def discovery() -> Response:
    doc = static_docs.discovery_document(runtime().config)
    return static_docs.flask_response(doc, request.headers.get("If-None-Match"))


@bp.get("/.well-known/oauth-authorization-server")
def authorization_server_metadata() -> Response:
    """RFC 8414 §3: the same metadata as OpenID Connect Discovery (RFC 8414 §2 allows the
    OpenID parameters beside its own; one document, so the two can never disagree). An issuer
    with a path would be found at /.well-known/oauth-authorization-server/<path> (§3.1): the
    proxy in front maps that; cityid's issuer is a host."""
    return discovery()


@bp.get("/jwks.json")
def jwks() -> Response:
    doc = static_docs.jwks_document(key_cache().get(uow.db()))
    return static_docs.flask_response(doc, request.headers.get("If-None-Match"))


# --------------------------------------------------------------------------- authorize


def _values() -> Any:
    """The authorization request's parameters: the pushed ones (RFC 9126) or the browser's."""
    return g.get("authz_values", request.values)


def _as_request(params: list[tuple[str, str]]) -> Request:
    """The authorization request the pushed parameters stand for, for Authlib to validate."""
    env = EnvironBuilder(
        method="GET",
        path="/authorize",
        base_url=runtime().config.issuer,
        query_string=urlencode(params),
        headers=[("User-Agent", request.headers.get("User-Agent", ""))],
    ).get_environ()
    return Request(env)


def _pushed_request(req: Request) -> tuple[Request | None, _Fail | None]:
    """RFC 9126 §4: an authorization request naming a pushed one uses its parameters only.

    Returns the pushed request (None without one) or, second, the answer to a bad request_uri."""
    request_uri = req.values.get("request_uri")
    if request_uri is None:
        return None, None
    client_id = req.values.get("client_id", "")
    try:
        pushed = par.resolve(uow.db(), runtime().keys, request_uri, client_id, utcnow())
    except par.ParError as exc:
        # The redirect URI is not known to be this client's: a page, no redirect (RFC 6749 §4.1.2.1).
        return None, _Fail(InvalidRequestError(str(exc)), error=par.ParError.error)
    g.par_digest = pushed.digest
    g.par_front_channel = pushed.front_channel
    return _as_request(pushed.params), None


def _error_redirect(err: OAuth2Error, error: str | None = None) -> ResponseReturnValue:
    """Redirect an error to the client only if the redirect URI was validated (RFC 6749 §4.1.2.1)."""
    if error is not None:
        err.error = error
    values = _values()
    if getattr(err, "redirect_uri", None):
        params = [("error", err.error)]
        if err.description:
            params.append(("error_description", err.description))
        state = values.get("state")
        if state:
            params.append(("state", state))
        params.append(("iss", runtime().config.issuer))  # RFC 9207 §2: also on errors
        sep = "&" if "?" in err.redirect_uri else "?"
        uow.record(
            action="authorize.error",
            outcome="denied",
            actor="anonymous",  # an authorization request proves nothing about who sent it
            subject="",
            reason=f"{err.error}: {err.description or ''}"[:300],
            details={"claimed_client_id": values.get("client_id", "")[:64]},
        )
        return redirect(err.redirect_uri + sep + urlencode(params))
    uow.record(
        action="authorize.error",
        outcome="denied",
        actor="anonymous",
        subject="",
        reason=f"{err.error}: {err.description or ''}"[:300],
        details={"claimed_client_id": values.get("client_id", "")[:64]},
    )
    return render_template(
        "message.html",
        title=_("This sign-in link is not valid"),
        message=_(
            "The service sent you here with a request we cannot accept. "
            "Please go back to the service and start again."
        ),
        detail=f"{err.error}: {err.description or ''}",
        status="error",
    ), 400


def _query_digest(req: Request) -> str:
    return hashlib.sha256(req.query_string).hexdigest()


def _pending_started(s: Any, req: Request) -> int | None:
    """When the browser's pending authorization started, if ``req`` is that request."""
    if s is None or not s.pending:
        return None
    p = json.loads(s.pending)
    return int(p["started"]) if p.get("q") == _query_digest(req) else None


def _set_pending(started: int | None = None) -> None:
    s = browser.ensure()
    pending: dict[str, Any] = {
        "q": _query_digest(request),
        "started": started or int(time.time()),
        "url": request.full_path if request.query_string else request.path,
        # OIDC Core §3.1.2.1: the pages of this request stay in the language asked for,
        # also where the citizen comes back without it in the query (eID, PAR)
        "ui": best_of(g.get("ui_locales")),
    }
    flow = funnel.current_flow()
    if flow is not None:  # which funnel steps this authorization has counted (idp.insights)
        pending["fn"] = flow
    s.pending = json.dumps(pending)


def _needs_consent(account_id: str, client: OAuthClient, scope: str) -> bool:
    row = uow.db().get(Consent, (account_id, client.client_id))
    if row is None:
        return True
    return not set(scope.split()) <= set(row.scope.split())


STEP_URLS = {
    "password": "/login",
    "device": "/login/device",
    "webauthn": "/login/webauthn",
    "eid": "/login/eid",
}


@dataclasses.dataclass
class _Fail:
    """An authorization request answered with an error (``_error_redirect``'s arguments)."""

    err: OAuth2Error
    error: str | None = None


@dataclasses.dataclass
class _Checked:
    """An authorization request validated, its level decided and the citizen's next step known:
    what /authorize and the login POST (``finish_after_login``) both decide on."""

    grant: Any
    client: OAuthClient
    redirect_uri: str
    data: Any
    prompts: set[str]
    scope: str
    started: int | None
    decision: Any
    pushed: Request | None
    account: Any = None
    session: Any = None
    outcome: Any = None


def _check_request(req: Request) -> _Fail | _Checked:
    """Validate the authorization request ``req`` (this request at /authorize; at the login POST,
    the pending one) and decide the level it needs. No side effects but ``g``'s request state."""
    pushed, refused = _pushed_request(req)
    if refused is not None:
        return refused
    g.authz_values = pushed.values if pushed is not None else req.values
    account = browser.current_account()
    session = browser.current()
    srv = server()
    authlib_req = pushed if pushed is not None else (None if req is request else req)
    try:
        grant = srv.get_consent_grant(request=authlib_req, end_user=account)
    except OAuth2Error as err:
        return _Fail(err)
    client: OAuthClient = grant.client
    redirect_uri = grant.redirect_uri
    # RFC 9126 §6; FAPI 2.0 Security Profile §5.3.2.2: a FAPI 2.0 client's requests only pushed
    if (pushed is None or g.par_front_channel) and (client.row.require_par or fapi2.is_fapi2(client.row)):
        return _Fail(
            InvalidRequestError(
                "this service must push its authorization requests (RFC 9126)", redirect_uri=redirect_uri
            )
        )
    data = _values()
    g.ui_locales = data.get("ui_locales")  # also from a pushed request (RFC 9126) or a POST
    flask_babel.refresh()  # the locale selector sees it (idp/i18n.py)
    if "request" in data:  # OIDC Core §6: not supported (discovery says so); never ignored
        unsupported = InvalidRequestError("request objects are not supported", redirect_uri=redirect_uri)
        return _Fail(unsupported, error="request_not_supported")
    if data.get("response_mode", "query") != "query":  # the only mode discovery advertises
        return _Fail(InvalidRequestError("response_mode must be query", redirect_uri=redirect_uri))
    prompts = set(data.get("prompt", "").split())
    if not levels.valid_max_age(data.get("max_age")):
        return _Fail(InvalidRequestError("max_age must be a non-negative integer", redirect_uri=redirect_uri))
    scope = client.get_allowed_scope(data.get("scope", ""))
    started = _pending_started(session, req)
    requested_at = dt.datetime.fromtimestamp(started, dt.UTC) if started else utcnow()
    rt = runtime()
    try:
        facts = levels.request_facts(data, requested_at, scope)
    except levels.BadClaimsParameter as exc:
        return _Fail(InvalidRequestError(str(exc), redirect_uri=redirect_uri))
    decision = required_level(
        facts, levels.client_policy(client.row), levels.scope_levels(rt.config.scope_levels, client.row)
    )
    if decision.refusal is not None:
        return _refusal(decision.refusal, redirect_uri)
    return _Checked(
        grant, client, redirect_uri, data, prompts, scope, started, decision, pushed, account, session
    )


def _next_step(c: _Checked) -> _Fail | None:
    """Which factor is missing? (ARCHITECTURE: step up, never restart.) Sets ``c.outcome``:
    ``AskStep`` (a step to take), or ``Satisfied``; a ``_Fail`` to answer with."""
    if c.account is None:
        goal, reason = c.decision.target, c.decision.reason
        c.outcome = AskStep(step=Step.PASSWORD, alternatives=(), goal=goal, reason=reason)
        if "none" in c.prompts:  # OIDC Core §3.1.2.6
            return _Fail(LoginRequiredError(redirect_uri=c.redirect_uri))
    else:
        c.outcome = next_step(
            c.decision, levels.session_facts(c.session), levels.account_facts(uow.db(), c.account), utcnow()
        )
    if isinstance(c.outcome, Refused):
        return _refusal(c.outcome, c.redirect_uri)
    if isinstance(c.outcome, AskStep) and "none" in c.prompts:
        return _Fail(LoginRequiredError(redirect_uri=c.redirect_uri))
    return None


def _consent_needed(c: _Checked) -> bool:
    """OIDC Core §3.1.2.4: the citizen is asked unless consent for every requested scope was
    given before; always with prompt=consent (OIDC Core §3.1.2.1)."""
    assert c.account is not None
    return "consent" in c.prompts or _needs_consent(c.account.id, c.client, c.scope)


def _malformed_dpop_jkt(c: _Checked) -> bool:
    dpop_jkt = c.data.get("dpop_jkt")  # RFC 9449 §10: bind the code to the client's DPoP key
    return dpop_jkt is not None and not re.fullmatch(r"[A-Za-z0-9_-]{43}", dpop_jkt)


def _pending_request() -> Request | None:
    """The authorization request waiting in this browser's session, as the GET /authorize the
    login step would redirect to (``pending["url"]``, a local path): None without one."""
    s = browser.current()
    if s is None or not s.pending:
        return None
    url = str(json.loads(s.pending).get("url", ""))
    path, _sep, query = url.partition("?")
    if path != "/authorize" or not query:
        return None
    env = EnvironBuilder(
        method="GET",
        path="/authorize",
        base_url=runtime().config.issuer,
        query_string=query,
        headers=[("User-Agent", request.headers.get("User-Agent", ""))],
    ).get_environ()
    return Request(env)


def finish_after_login() -> Any:
    """After a login step: the authorization response (the code, RFC 6749 §4.1.2) when the pending
    authorization request needs nothing more (no further factor, no consent to ask: OIDC Core
    §3.1.2.3-§3.1.2.5), else None, and the citizen goes on at /authorize as before.

    The decision is /authorize's own (``_check_request``, ``_next_step``, ``_consent_needed``) and
    the code, session and audit entries are those the GET /authorize would have produced: one
    round trip less for the browser, nothing different for the service."""
    req = _pending_request()
    if req is None or oversized(req):
        return None
    # The decision only reads: the new session row log_in made is written with the code (one
    # INSERT, no UPDATE after it), or at the end of the request when /authorize is to answer.
    with uow.db().no_autoflush:
        c = _check_request(req)
        # anything but the code (an error, a step, the consent page) is /authorize's to answer
        if isinstance(c, _Fail) or c.started is None or _next_step(c) is not None:
            return None
        if not isinstance(c.outcome, Satisfied) or c.session is None or _consent_needed(c):
            return None
    if _malformed_dpop_jkt(c):
        return None
    funnel.authorization_accepted(
        service=c.client.client_id, level_asked=c.decision.target, language=_language(c.data), new=False
    )
    return _issue_code(c, req)


@bp.route("/authorize", methods=["GET", "POST"])
def authorize() -> Any:
    if oversized(request):
        err = InvalidRequestError("a parameter is too long")
        return _error_redirect(err)
    if request.method == "POST" and "csrf_token" not in request.form:
        return _posted_request()
    c = _check_request(request)
    if isinstance(c, _Fail):
        return _error_redirect(c.err, c.error)
    client, redirect_uri, data, scope, started = c.client, c.redirect_uri, c.data, c.scope, c.started
    account, session = c.account, c.session
    funnel.authorization_accepted(
        service=client.client_id, level_asked=c.decision.target, language=_language(data), new=started is None
    )
    failed = _next_step(c)
    if failed is not None:
        return _error_redirect(failed.err, failed.error)
    outcome = c.outcome
    if isinstance(outcome, AskStep):
        _set_pending(started)
        if outcome.step != Step.PASSWORD:
            funnel.step(funnel.STEPUP, "asked", method=str(outcome.step))
        uow.record(
            action="authorize.step",
            outcome="info",
            actor=account.id if account else "anonymous",
            subject=client.client_id,
            reason=f"{outcome.step}: {outcome.reason.code}",
        )
        target = STEP_URLS[str(outcome.step)]
        step_query = {"client_id": client.client_id}
        if data.get("ui_locales"):  # OIDC Core §3.1.2.1: the login pages in the language asked for
            step_query["ui_locales"] = data["ui_locales"][:100]
        return redirect(f"{target}?{urlencode(step_query)}")
    assert account is not None and session is not None and isinstance(outcome, Satisfied)

    if request.method == "POST":
        browser.check_csrf()
        if request.form.get("decision") != "allow":
            funnel.step(funnel.CONSENT, "refused")
            funnel.finished()
            uow.record(
                action="consent.deny",
                outcome="denied",
                actor=account.id,
                subject=client.client_id,
                reason="citizen declined",
            )
            return _error_redirect(AccessDeniedError(redirect_uri=redirect_uri))
        # the consent form was already answered (double submit)
        if _pending_started(session, request) is None:
            uow.record(
                action="consent.replay",
                outcome="denied",
                actor=account.id,
                subject=client.client_id,
                reason="consent form sent again",
            )
            return render_template(
                "message.html",
                title=_("This form was already sent"),
                message=_(
                    "We have already received your answer. To log in again, please start at the service."
                ),
                status="error",
            ), 400
        consents.grant(uow.db(), account.id, client.client_id, scope)
        funnel.step(funnel.CONSENT, "given")
        uow.record(
            action="consent.grant",
            outcome="success",
            actor=account.id,
            subject=client.client_id,
            reason=scope,
        )
    elif _consent_needed(c):
        if "none" in c.prompts:
            return _error_redirect(ConsentRequiredError(redirect_uri=redirect_uri))
        _set_pending(started)  # the consent form answers this request once
        funnel.step(funnel.CONSENT, "shown")
        return render_template(
            "consent.html",
            client=client.row,
            scopes=scope.split(),
            level=outcome.acr,
            csrf_token=browser.csrf_token(),
        )
    if _malformed_dpop_jkt(c):
        return _error_redirect(InvalidRequestError("malformed dpop_jkt", redirect_uri=redirect_uri))
    return _issue_code(c, None)


def _issue_code(c: _Checked, req: Request | None) -> Any:
    """The grant, the code and its redirect (RFC 6749 §4.1.2; `state` by Authlib, `iss` by RFC
    9207 §2). ``req``: the authorization request when it is not this HTTP request (login POST)."""
    account, session, client, outcome = c.account, c.session, c.client, c.outcome
    # OIDC Core §5.1 `locale`: the language the citizen used on the pages of this login, so the
    # service can go on in it (also what later mails to the account are written in); taken
    # while the pending request (its `ui`) is still there
    locale = str(flask_babel.get_locale() or DEFAULT)
    funnel.step(
        funnel.CODE, "issued", level_reached=funnel.level_name(outcome.acr), method=_login_method(outcome.amr)
    )
    # cleared before the flush: a session row made by this request (the login POST's new one)
    # is written once, without it, rather than inserted and then updated; flushed before the
    # grant is made, which names the session's `sid` (a new row gets it when written)
    session.pending = None
    uow.db().flush()
    g_row = Grant(
        client_id=client.client_id,
        account_id=account.id,
        sid=session.sid,
        scope=c.scope,
        auth_time=int(outcome.auth_time.timestamp()),
        acr=outcome.acr,
        amr=json.dumps(list(outcome.amr)),
        cnf_jkt=c.data.get("dpop_jkt"),
    )
    uow.db().add(g_row)
    uow.db().flush()
    principal = principal_for(uow.db(), g_row)
    account.locale = locale
    if c.pushed is not None and not par.consume(uow.db(), g.par_digest, utcnow()):
        return _error_redirect(InvalidRequestError("request_uri already used"), error=par.ParError.error)
    uow.record(
        action="authorize.code",
        outcome="success",
        actor=account.id,
        subject=client.client_id,
        reason=f"acr={outcome.acr} ({outcome.reason.code})",
        details={"amr": list(outcome.amr)},
    )
    srv = server()
    authz_req = c.pushed if c.pushed is not None else req
    return srv.create_authorization_response(request=authz_req, grant_user=principal, grant=c.grant)


# the consent form's own fields: never part of an authorization request
CONSENT_FORM_FIELDS = {"csrf_token", "decision"}


def _posted_request() -> Any:
    """OIDC Core §3.1.2.1: the authorization endpoint MUST support POST (form-encoded).

    Told apart from the consent form by the absence of a CSRF token: a POST without one is an
    authorization request and can never decide consent (the consent form needs the token of
    this browser session, OWASP CSRF cheat sheet). Its parameters are kept as a front-channel
    pushed request (idp.oauth.par) and the browser goes on with GET and the request_uri only,
    so they stay out of URLs and logs as the client meant; the request is then validated as any
    other. A service registered --require-par still has to push (RFC 9126 §6)."""
    form = request.form
    client_id = form.get("client_id", "")
    if "request_uri" in form:  # RFC 9126 §4: the reference of a pushed request, nothing more
        target = urlencode({"client_id": client_id, "request_uri": form["request_uri"]})
        return redirect(f"/authorize?{target}", 303)
    too_big = (request.content_length or 0) > MAX_PUSHED_BYTES or len(form) > MAX_PUSHED_PARAMS
    client = query_client(client_id)
    if client is None or too_big:
        # no redirect: the redirect URI was not validated (RFC 6749 §4.1.2.1)
        return _error_redirect(
            InvalidRequestError("the request is too large" if too_big else "unknown client_id")
        )
    params = [(k, v) for k, v in form.items(multi=True) if k not in CONSENT_FORM_FIELDS]
    request_uri, _ = par.push(
        uow.db(), runtime().keys, client.client_id, params, utcnow(), front_channel=True
    )
    uow.record(
        action="authorize.posted",
        outcome="info",
        actor="anonymous",  # an authorization request proves nothing about who sent it
        subject=client.client_id,
        reason="authorization request sent as POST: kept, continued with GET",
    )
    target = urlencode({"client_id": client.client_id, "request_uri": request_uri})
    return redirect(f"/authorize?{target}", 303)


def _language(data: Any) -> str:
    from flask_babel import get_locale

    return str(get_locale() or "de")[:8]


def _login_method(amr: Any) -> str:
    """The strongest method of this login, for the funnel: the step-up used in this authorization,
    else (a session reused: single sign-on) the strongest factor the session holds."""
    flow = funnel.current_flow()
    if flow is not None and flow.get("m"):
        return str(flow["m"])
    kinds = set(amr)
    if kinds & {"sc", "eid"}:
        return "eid"
    if "hwk" in kinds:
        return "hwk"
    return "password"


def _refusal(refusal: Refused, redirect_uri: str) -> _Fail:
    err = OAuth2Error(description=refusal.reason.text, redirect_uri=redirect_uri)
    err.error = refusal.error  # e.g. unmet_authentication_requirements (OIDC Core errata)
    return _Fail(err)


# --------------------------------------------------------------------------- pushed requests

CLIENT_AUTH_PARAMS = {"client_secret", "client_assertion", "client_assertion_type"}


# An authorization request has about 15 parameters of at most MAX_PARAM characters each.
MAX_PUSHED_PARAMS = 40
MAX_PUSHED_BYTES = 16 * 1024


def _par_error(status: int, error: str, description: str) -> Response:
    description = safe_description(description)  # RFC 6749 §5.2: it may name a pushed value
    uow.record(
        action="par.refuse",
        outcome="denied",
        actor="anonymous",  # refused before (or because) the client authenticated
        subject="",
        reason=f"{error}: {description}"[:300],
        details={"claimed_client_id": request.values.get("client_id", "")[:64]},
    )
    resp = jsonify(error=error, error_description=description)  # RFC 9126 §2.3
    resp.status_code = status
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/par")
def pushed_authorization_request() -> Any:
    """RFC 9126 §2: the client pushes its authorization request and gets a request_uri."""
    too_big = (request.content_length or 0) > MAX_PUSHED_BYTES or len(request.form) > MAX_PUSHED_PARAMS
    if oversized(request) or too_big:
        # what is stored for up to half an hour stays small: a public client's id is no secret
        return _par_error(400, "invalid_request", "the request is too large")
    srv = server()
    try:  # §2.1 (1): client authentication as at the token endpoint
        client: OAuthClient = srv.authenticate_client(srv.create_oauth2_request(None), ALL_AUTH, "par")
    except OAuth2Error as err:
        status = 401 if err.error == "invalid_client" else err.status_code  # RFC 6749 §5.2
        resp = _par_error(status, err.error, err.description or "client authentication failed")
        # RFC 6749 §5.2: in the scheme the client used (the header's first word: werkzeug's
        # request.authorization raises on credentials that are no base64)
        if status == 401 and request.headers.get("Authorization", "").partition(" ")[0].lower() == "basic":
            resp.headers["WWW-Authenticate"] = f'Basic error="{err.error}"'
        return resp
    form = request.form
    if "request_uri" in form:  # §2.1 (2)
        return _par_error(400, "invalid_request", "request_uri must not be pushed")
    if form.get("client_id", client.client_id) != client.client_id:
        return _par_error(400, "invalid_request", "client_id is not the authenticated client")
    if "request" in form:
        return _par_error(400, "request_not_supported", "request objects are not supported")
    if fapi2.is_fapi2(client.row) and not form.get("redirect_uri"):
        # FAPI 2.0 Security Profile §5.3.2.2: redirect_uri is required in a pushed request
        return _par_error(400, "invalid_request", "redirect_uri is required (FAPI 2.0)")
    params = [(k, v) for k, v in form.items(multi=True) if k not in CLIENT_AUTH_PARAMS and k != "client_id"]
    params.append(("client_id", client.client_id))
    # §2.1 (3): validated as the authorization endpoint validates (redirect URI, PKCE, scope…)
    areq = _as_request(params)
    if not levels.valid_max_age(areq.values.get("max_age")):
        return _par_error(400, "invalid_request", "max_age must be a non-negative integer")
    try:
        grant = srv.get_authorization_grant(srv.create_oauth2_request(areq))
        grant.validate_no_multiple_request_parameter(grant.request)
        grant.validate_authorization_request()
        levels.request_facts(areq.values, utcnow(), areq.values.get("scope", ""))
    except levels.BadClaimsParameter as exc:
        return _par_error(400, "invalid_request", str(exc))
    except OAuth2Error as err:
        return _par_error(400, err.error, err.description or err.error)
    dpop_jkt = areq.values.get("dpop_jkt")
    if dpop_jkt is not None and not re.fullmatch(r"[A-Za-z0-9_-]{43}", dpop_jkt):
        return _par_error(400, "invalid_request", "malformed dpop_jkt")
    rt = runtime()
    try:
        # RFC 9449 §10.1: a DPoP proof at the PAR endpoint binds the code to its key, as
        # dpop_jkt does; both present, they must name the same key.
        proof = endpoint_proof(request.headers, "/par")
    except dpop.DpopError as exc:
        return with_dpop_nonce(_par_error(400, exc.error, exc.description))  # RFC 9449 §8
    if proof is not None:
        if dpop_jkt is None:
            params.append(("dpop_jkt", proof.jkt))
        elif not equal(dpop_jkt, proof.jkt):
            return _par_error(400, "invalid_dpop_proof", "dpop_jkt names another key than the DPoP proof")
    request_uri, expires_in = par.push(uow.db(), rt.keys, client.client_id, params, utcnow())
    uow.record(
        action="par.push",
        outcome="success",
        actor=client.client_id,
        subject=client.client_id,
        reason=f"expires in {expires_in} s",
    )
    resp = jsonify(request_uri=request_uri, expires_in=expires_in)
    resp.status_code = 201  # RFC 9126 §2.2
    resp.headers["Cache-Control"] = "no-store"
    return resp


# --------------------------------------------------------------------------- tokens

# `/token` is served by idp.oauth.token_endpoint, in front of Flask (see there why).


@bp.post("/introspect")
def introspect() -> Any:
    return server().create_endpoint_response("introspection")


@bp.post("/revoke")
def revoke() -> Any:
    return server().create_endpoint_response("revocation")


@bp.route("/userinfo", methods=["GET", "POST"])
def userinfo() -> Any:
    from idp.oauth.resource import ResourceError, authenticate
    from idp.oauth.server import userinfo_claims

    try:
        claims = authenticate("openid")  # OIDC Core §5.3.1
    except ResourceError as err:
        return err.response()
    gid = claims.get("gid")
    grant = uow.db().get(Grant, gid) if gid else None
    principal = principal_for(uow.db(), grant) if grant else None
    if principal is None:  # a client-credentials token (with scope openid) names no citizen
        bound = bool((claims.get("cnf") or {}).get("jkt"))
        # RFC 6750 §3.1 (WWW-Authenticate on a 401), OIDC Core §5.3.3
        return ResourceError(
            401,
            "invalid_token",
            "the access token does not act for a citizen",
            scheme="DPoP" if bound else "Bearer",
        ).response()
    resp = jsonify(dict(userinfo_claims(principal, claims.get("scope", ""))))
    resp.headers["Cache-Control"] = "no-store"
    return resp


# --------------------------------------------------------------------------- logout


class EndSession(EndSessionEndpoint):  # type: ignore[misc]
    def get_server_jwks(self) -> Any:
        return key_cache().get(uow.db()).verify_set

    def get_algorithms(self) -> list[str]:
        return ["ES256", "RS256"]

    def _validate_id_token_hint(self, id_token_hint: str) -> dict[str, Any]:
        claims: dict[str, Any] = super()._validate_id_token_hint(id_token_hint)  # signed by us (§2)
        try:
            header = jws.extract_compact(id_token_hint.encode()).protected
        except (JoseError, ValueError) as exc:
            raise InvalidRequestError("malformed id_token_hint") from exc
        # RFC 8725 §3.11: our ID tokens are typed "JWT"; an access token (at+jwt) or a logout
        # token (logout+jwt) signed by the same keys is no ID token and no hint.
        if header.get("typ") != "JWT" or claims.get("iss") != runtime().config.issuer:
            raise InvalidRequestError("id_token_hint is not an ID token of this provider")
        return claims

    def resolve_client_from_id_token_claims(self, claims: dict[str, Any]) -> Any:
        aud = claims.get("aud")
        cid = aud if isinstance(aud, str) else (aud[0] if aud else None)
        return self.server.query_client(cid) if cid else None

    def end_session(self, req: Any) -> None:
        end_browser_session(reason="rp-initiated logout")


def end_browser_session(*, reason: str) -> None:
    """Log the browser out, revoke its grants and notify services by back-channel logout."""
    s = browser.current()
    if s is None:
        return
    rt = runtime()
    db = uow.db()
    backchannel.enqueue_for_session(
        db, key_cache(), issuer=rt.config.issuer, sid=s.sid, subject_key=rt.keys.subject
    )
    from idp.oauth.server import revoke_grant

    for gid in db.execute(select(Grant.id).where(Grant.sid == s.sid)).scalars():
        revoke_grant(db, gid, reason)
    uow.record(
        action="logout",
        outcome="success",
        actor=s.account_id or "anonymous",
        subject=s.sid,
        reason=reason,
    )
    browser.log_out()


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> Any:
    if oversized(request):
        return render_template(
            "message.html",
            title=_("Logout failed"),
            message=_("The request was too long."),
            status="error",
        ), 400
    srv = server()
    try:
        req = srv.validate_endpoint_request("end_session")
    except OAuth2Error as err:
        uow.record(
            action="logout.refuse",
            outcome="denied",
            actor="anonymous",
            subject="",
            reason=f"{err.error}: {err.description or ''}"[:300],
        )
        return render_template(
            "message.html",
            title=_("Logout failed"),
            message=_("The service sent an invalid logout request."),
            detail=err.description,
            status="error",
        ), 400
    # RP-Initiated Logout §2 / §6: the citizen confirms (a POST with a CSRF token) unless the
    # hint is an ID token issued in this very browser session (its `sid`). Any ID token would
    # not do: a third party could use its own, or a service's, to log people out with a link.
    session = browser.current()
    hint_sid = str((req.id_token_claims or {}).get("sid", ""))
    this_session = session is not None and equal(hint_sid, session.sid)
    if request.method == "POST":
        browser.check_csrf()
    elif not this_session and (account := browser.current_account()) is not None:
        if req.id_token_claims is not None:
            uow.record(
                action="logout.confirm",
                outcome="info",
                actor=account.id,
                subject=req.client.client_id if req.client else "",
                reason="id_token_hint of another session: the citizen is asked",
            )
        return render_template(
            "logout_confirm.html",
            client=req.client and req.client.row,
            csrf_token=browser.csrf_token(),
        )
    resp = srv.create_endpoint_response("end_session", req)
    if resp is not None:
        return resp
    return render_template(
        "message.html",
        title=_("You are logged out"),
        message=_("You have been logged out of cityid."),
        status="ok",
    )


def init_app(app: Any, srv: Any) -> None:
    srv.register_endpoint(EndSession)
