"""Application factory."""

from __future__ import annotations

import importlib
import json
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, render_template, request
from flask.json.provider import DefaultJSONProvider
from flask_babel import Babel
from flask_babel import gettext as _
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from db import make_engine, make_session_factory
from idp import browser, cors, retry, uow
from idp.config import Config, eid_problem, issuer_problem
from idp.i18n import LANGUAGES, direction, select_locale
from idp.instance import InstanceKeys
from idp.keys import KeyCache
from idp.mail import Courier
from idp.oauth.errors import safe_description
from idp.request import CityidRequest
from idp.runtime import Runtime

# One module per endpoint group; each exposes ``bp`` (a Blueprint).
VIEW_MODULES = [
    "idp.views.oidc",
    "idp.views.auth",
    "idp.views.account",
    "idp.views.email_change",  # change of e-mail address
    "idp.views.pki",
    "idp.views.privacy",  # data export, account deletion
    "idp.views.smartcard",  # device JSON API, PKI-2FA step
    "idp.views.devices",  # "My devices"
    "idp.views.webauthn",  # WebAuthn step
    "idp.views.eid",  # eID step
    "idp.views.wallet",  # EU identity wallet (OpenID4VP verifier) as an eID route
    "idp.views.vci",  # OpenID4VCI credential issuer: the library card in the wallet
    "idp.views.resource",  # demo resource endpoint (DPoP)
    "idp.views.accessibility",  # accessibility statement, Leichte Sprache, sign language (BITV 2.0)
    "idp.views.signatures",  # citizen signatures: service and device API
    "idp.views.signature_check",  # validation: JSON API and "Check a signed document"
    "idp.insights.views",  # /insights for staff, /metrics with a token (issue 15)
]
# errors are JSON here ({"error", "error_description"}), pages elsewhere
JSON_PATHS = ("/api/", "/token", "/introspect", "/revoke", "/userinfo", "/par")


class HostileJSONProvider(DefaultJSONProvider):
    """The one reader of JSON request bodies (``request.get_json`` everywhere goes through it).

    JSON nested deeper than the interpreter's recursion limit (``[[[[…``, ≈ 1,000 levels) makes
    ``json.loads`` raise ``RecursionError``, which ``get_json(silent=True)`` does not catch: here
    it becomes the ``ValueError`` of any other malformed body, so every JSON endpoint answers it
    as it answers bad JSON (400 ``invalid_request``), never with a 500."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError as exc:
            raise ValueError("JSON nested too deeply") from exc


def _media_origins(config: Config) -> str:
    """The origins of the city's videos given as URLs (``[branding] *_video``), for media-src."""
    origins = []
    for video in (config.branding.easy_language_video, config.branding.sign_language_video):
        parts = urlsplit(video)
        if parts.scheme == "https" and parts.netloc:
            origins.append(f"https://{parts.netloc}")
    return "".join(f" {o}" for o in sorted(set(origins)))


def _security_headers(issuer: str, media: str = "") -> Any:
    https = urlsplit(issuer).scheme == "https"
    fixed = [
        (
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; "
            "form-action 'self' http: https:; frame-ancestors 'none'; base-uri 'none'; "
            f"connect-src 'self'; media-src 'self'{media}",
        ),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("X-Frame-Options", "DENY"),
    ]
    if https:
        fixed.append(("Strict-Transport-Security", "max-age=63072000; includeSubDomains"))
    lowered = [(name.lower(), name, value) for name, value in fixed]

    def add(response: Response) -> Response:
        # Every response gets these unless a view set its own; one pass (this is on every request).
        h = response.headers
        present = {k.lower() for k in h.keys()}
        h.extend([(name, value) for low, name, value in lowered if low not in present])
        if response.mimetype == "text/html" and "cache-control" not in present:
            h["Cache-Control"] = "no-store"
        return response

    return add


def create_app(config: Config, *, check_schema: bool = True, demo: bool = False) -> Flask:
    problem = issuer_problem(config.issuer) or eid_problem(config)
    if problem is not None:
        raise ValueError(problem)
    app = Flask(__name__)
    app.request_class = CityidRequest  # header parsing that never raises on hostile input
    app.json = HostileJSONProvider(app)
    engine = make_engine(config.db_url)
    if check_schema:
        from db.migrate import check_schema as _check

        _check(engine)
    sessions = make_session_factory(engine)
    if check_schema:
        from idp.instance import check_secrets

        with sessions() as s:
            check_secrets(s, config)
    keys = InstanceKeys.from_config(config)
    app.extensions["cityid"] = Runtime(
        config=config,
        engine=engine,
        sessions=sessions,
        keys=keys,
        key_cache=KeyCache(config.key_passphrase or config.secret_key),
        courier=Courier(config, keys, sessions),
    )
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    app.config["BABEL_DEFAULT_LOCALE"] = "de"
    Babel(app, locale_selector=select_locale)
    uow.init_app(app)
    browser.init_app(app)
    security_headers = _security_headers(config.issuer, _media_origins(config))
    app.after_request(security_headers)

    @app.after_request
    def _cors(response: Response) -> Response:
        if request.path in cors.CORS_PATHS:
            preflight = cors.is_preflight(request.method, request.headers)
            response.headers.extend(cors.PREFLIGHT if preflight else cors.SIMPLE)
        return response

    from idp.oauth.server import create_server

    srv = create_server(app)
    app.extensions["cityid_oauth"] = srv
    for name in VIEW_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        app.register_blueprint(module.bp)
        if hasattr(module, "init_app"):
            module.init_app(app, srv)

    from idp import openapi

    openapi.init_app(app, config.issuer)  # /openapi.json from docs/openapi.yaml

    from idp.oauth.token_endpoint import TokenEndpoint

    retry.track_commits(sessions)
    app.wsgi_app = retry.RetryOnce(app.wsgi_app, engine)  # type: ignore[method-assign]
    app.wsgi_app = TokenEndpoint(app, security_headers)  # type: ignore[method-assign]
    from idp.oauth.fast_paths import BeforeFlask
    from idp.static_docs import StaticDocuments

    app.wsgi_app = BeforeFlask(app, security_headers)  # type: ignore[method-assign]

    app.wsgi_app = StaticDocuments(app, security_headers)  # type: ignore[method-assign]
    from idp.health import Health

    # GET /health for the load balancer, ahead of everything (idp.health: the drain of a stop)
    app.wsgi_app = Health(app.wsgi_app, security_headers)  # type: ignore[method-assign]

    if config.insights.metrics:  # request rate and latency per endpoint group (docs/insights.md)
        from idp.insights.metrics import RequestMetrics

        app.wsgi_app = RequestMetrics(app.wsgi_app)  # type: ignore[method-assign]

    if demo:
        from idp.views.demo import init_demo

        init_demo(app)

    @app.context_processor
    def _branding() -> dict[str, Any]:
        from flask_babel import get_locale

        lang = str(get_locale() or "de")
        return {"branding": config.branding, "lang": lang, "dir": direction(lang), "languages": LANGUAGES}

    def _has_page(path: str) -> bool:
        try:
            app.url_map.bind("localhost").match(path, method="GET")
        except HTTPException:
            return False
        return True

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        response = app.make_response(_http_error_body(exc))
        # the exception's own headers: Allow on a 405 (RFC 9110 §15.5.6 MUST), WWW-Authenticate,
        # Retry-After; our body brings its own Content-Type
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    def _http_error_body(exc: HTTPException) -> Any:
        if request.path.startswith(JSON_PATHS):
            code = exc.code or 500
            error = "server_error" if code >= 500 else "invalid_request"  # RFC 6749 §4.1.2.1
            return {"error": error, "error_description": safe_description(exc.description or "")}, code
        if exc.description == "csrf":
            title = _("This form has expired")
            message = _(
                "For your security, forms can only be sent once and from this site. "
                "Please go back, reload the page and try again."
            )
        elif exc.code == 404:
            title, message = _("Page not found"), _("This page does not exist.")
        elif exc.code == 413:
            title, message = _("Too much data"), _("The request was too large.")
            # the way back to the form that was sent (an authorization request is only the
            # service's to send again: there the start page)
            if request.path != "/authorize" and _has_page(request.path):
                page = render_template(
                    "message.html",
                    title=title,
                    message=message,
                    status="error",
                    link=request.path,
                    link_text=_("Back to the form"),
                )
                return page, 413
        else:
            title, message = _("Something went wrong"), _("The request could not be processed.")
        return render_template("message.html", title=title, message=message, status="error"), exc.code

    @app.errorhandler(DBAPIError)
    def _database_error(exc: DBAPIError) -> Any:
        if not retry.may_repeat(exc):
            raise exc  # a 500, as any other failure
        last = bool(request.environ.get(retry.ENVIRON_KEY))
        if last:
            uow.give_up()  # not repeated: its audit records and refusal work are kept
        else:
            uow.abandon()  # the repeat records what it does
        api = request.path.startswith(("/api/", "/introspect", "/revoke", "/userinfo", "/par", "/pki/"))
        if api:
            resp = Response(
                json.dumps({"error": "temporarily_unavailable", "error_description": "try again"}),
                status=503,
                mimetype="application/json",
            )
        else:
            resp = Response(
                render_template(
                    "message.html",
                    title=_("Please try again"),
                    message=_("The service is briefly unavailable. Nothing was changed."),
                    status="error",
                ),
                status=503,
            )
        resp.headers["Retry-After"] = "1"
        if not last:
            resp.headers[retry.HEADER] = "1"  # RetryOnce runs the request once more
        return resp

    @app.errorhandler(browser.FormExpired)
    def _form_expired(exc: Exception) -> Any:
        # WCAG 2.1 2.2.1: what the citizen typed is not lost; the form comes back with a fresh
        # token (status 200, so that the new session and its cookie are kept), nothing else changes
        values = {k: v[:1024] for k, v in request.form.items() if k != "csrf_token" and "password" not in k}
        return browser.FORM_REFILL[str(request.endpoint)](values)

    @app.errorhandler(UnicodeDecodeError)
    def _bad_encoding(exc: Exception) -> Any:
        return render_template(
            "message.html",
            title=_("Something went wrong"),
            message=_("The request contained invalid characters."),
            status="error",
        ), 400

    return app
