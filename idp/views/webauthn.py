"""WebAuthn in the browser: the step at ``/login/webauthn`` and "My security keys".

JSON endpoints (``idp/static/webauthn.js`` calls them; CSRF token in ``X-CSRF-Token``):

- ``POST /account/security-keys/register/begin`` / ``…/finish``: a logged-in citizen registers
  a credential (WebAuthn L2 §7.1);
- ``POST /login/webauthn/begin`` / ``…/finish``: the step-up assertion (§7.2); on success the
  factor ``hwk`` is recorded at the level the credential's attestation allows (low for a
  passkey without acceptable attestation) and the answer names where to continue.

Errors are ``{"error", "error_description"}``; every decision is audited; a refused request
changes no state, except that the challenge it named is used up (single use, §13.4.3).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request
from flask_babel import gettext as _
from sqlalchemy.orm import Session

from db import utcnow
from idp import browser, levels, uow
from idp import webauthn as wa
from idp.crypto import equal
from idp.insights import funnel
from idp.models import Account, Client
from idp.runtime import runtime
from idp.views.account import ACCOUNT_LINKS, may_change_strong_factors, notify_factor_change
from idp.views.auth import complete_step

bp = Blueprint("webauthn", __name__)

MAX_BODY = 64 * 1024  # a registration response is a few KiB (x5c chains included)


# --------------------------------------------------------------------------- hooks and settings


def _register_hooks() -> None:
    if wa.account_webauthn_facts not in levels.ACCOUNT_FACT_HOOKS:
        levels.ACCOUNT_FACT_HOOKS.append(wa.account_webauthn_facts)
    try:
        from idp import privacy
    except ModuleNotFoundError:  # pragma: no cover - privacy hooks not present in this tree
        return
    if wa.export_credentials not in privacy.EXPORT_HOOKS:
        privacy.EXPORT_HOOKS.append(wa.export_credentials)
    if wa.delete_credentials not in privacy.DELETE_HOOKS:
        privacy.DELETE_HOOKS.append(wa.delete_credentials)


_register_hooks()


def _link() -> tuple[str, str] | None:
    """*My account* leads to the security keys page (WCAG 2.1 2.4.5: more than one way)."""
    return "/account/security-keys", _("My security keys")


def init_app(app: Any, srv: Any) -> None:
    """Build the relying party once at start-up (configuration, MDS3 trust anchors)."""
    if _link not in ACCOUNT_LINKS:
        ACCOUNT_LINKS.append(_link)
    cfg = app.extensions["cityid"].config
    w = cfg.webauthn
    app.extensions["cityid_webauthn"] = wa.load_settings(
        issuer=cfg.issuer,
        rp_id=w.rp_id,
        rp_name=w.rp_name or f"{cfg.branding.city_name} City Account",
        mds3_blob_file=w.mds3_blob_file,
        mds3_root_file=w.mds3_root_file,
        formats=w.attestation_formats,
        now=utcnow(),
    )


def settings() -> wa.WebAuthnSettings:
    s: wa.WebAuthnSettings = current_app.extensions["cityid_webauthn"]
    return s


# --------------------------------------------------------------------------- JSON plumbing


def _json_error(error: str, description: str, status: int) -> Response:
    resp = jsonify(error=error, error_description=description)
    resp.status_code = status
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _json_request(action: str) -> tuple[Account, Any] | Response:
    """The logged-in account and the JSON body, or the refusal (audited)."""
    account = browser.current_account()
    if account is None:
        uow.record(action=action, outcome="denied", actor="anonymous", subject="", reason="not logged in")
        return _json_error("login_required", _("Please log in first."), 401)
    sent = request.headers.get("X-CSRF-Token", "")
    # OWASP CSRF cheat sheet: synchroniser token in a custom header, bound to this session
    if not sent or not equal(sent, browser.csrf_token()):
        uow.record(
            action="csrf.reject",
            outcome="denied",
            actor=account.id,
            subject=request.path,
            reason="bad CSRF header",
        )
        return _json_error("invalid_request", _("The page has expired. Please reload it."), 400)
    if not request.is_json or (request.content_length or 0) > MAX_BODY:
        uow.record(
            action=action, outcome="denied", actor=account.id, subject=account.id, reason="not a JSON body"
        )
        return _json_error("invalid_request", _("The request is not valid."), 400)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        uow.record(
            action=action, outcome="denied", actor=account.id, subject=account.id, reason="malformed JSON"
        )
        return _json_error("invalid_request", _("The request is not valid."), 400)
    return account, body


def _refuse(action: str, account: Account, exc: wa.WebAuthnError, response: object = None) -> Response:
    """Audit the refusal; discard the challenge the response named (after the rollback)."""
    session_digest = browser.current().id_digest  # type: ignore[union-attr]
    digest = wa.challenge_digest_in(response) if response is not None else None
    if digest is not None:

        def _discard(s: Session) -> None:
            wa.discard_challenge(s, digest, session_digest)

        uow.on_failure(_discard)
    if action == "webauthn.authenticate":
        funnel.step(funnel.STEPUP, "failed", method="webauthn")
    uow.record(
        action=action,
        outcome="denied",
        actor=account.id,
        subject=account.id,
        reason=f"{exc.error}: {exc.detail}"[:500],
    )
    return _json_error(exc.error, _(exc.description, **exc.params), exc.status)  # N_ texts of idp/webauthn.py


def _email(account: Account) -> str:
    return runtime().keys.personal_data.open(account.email_enc, f"email:{account.id}").decode()


def _step_up_required() -> wa.StepUpRequired:
    return wa.StepUpRequired(
        _(
            "To add or remove a security key, first log in with a security key, the city app or "
            "your ID card (within the last ten minutes)."
        ),
        "account has a means at substantial; this session has no recent factor at that level",
    )


# --------------------------------------------------------------------------- registration


@bp.post("/account/security-keys/register/begin")
def register_begin() -> Any:
    got = _json_request("webauthn.register")
    if isinstance(got, Response):
        return got
    account, _body = got
    # A password alone must not add a second factor next to an existing one: with a means that
    # reaches substantial, adding another needs that level in this session (docs/webauthn.md).
    if not may_change_strong_factors(account):
        return _refuse("webauthn.register", account, _step_up_required())
    try:
        options = wa.begin_registration(
            uow.db(),
            settings(),
            account_id=account.id,
            user_name=_email(account),
            session_digest=browser.current().id_digest,  # type: ignore[union-attr]
            now=utcnow(),
        )
    except wa.WebAuthnError as exc:
        return _refuse("webauthn.register", account, exc)
    uow.record(
        action="webauthn.register_begin", outcome="info", actor=account.id, subject=account.id, reason=""
    )
    resp = jsonify(options)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/account/security-keys/register/finish")
def register_finish() -> Any:
    got = _json_request("webauthn.register")
    if isinstance(got, Response):
        return got
    account, body = got
    credential = body.get("credential")
    name = wa.clean_name(body.get("name"), _("Security key"))
    if not may_change_strong_factors(account):
        return _refuse("webauthn.register", account, _step_up_required(), credential)
    try:
        done = wa.finish_registration(
            uow.db(),
            settings(),
            account_id=account.id,
            session_digest=browser.current().id_digest,  # type: ignore[union-attr]
            response=credential,
            name=name,
            now=utcnow(),
        )
    except wa.WebAuthnError as exc:
        return _refuse("webauthn.register", account, exc, credential)
    level = done.max_level.label if done.max_level is not None else None
    uow.record(
        action="webauthn.register",
        outcome="success",
        actor=account.id,
        subject=account.id,
        reason=f"credential {done.credential_id} fmt={done.attestation_format} level={level}: {done.reason}"[
            :500
        ],
    )
    notify_factor_change(account, _("A security key was added to your account: %(name)s.", name=done.name))
    return jsonify(
        id=done.credential_id,
        name=done.name,
        attestation_format=done.attestation_format,
        attestation_trusted=done.attestation_trusted,
        level=level,
    )


# --------------------------------------------------------------------------- the step


def _pending_client() -> Client | None:
    cid = request.args.get("client_id", "")[:64]
    return uow.db().get(Client, cid) if cid else None


@bp.get("/login/webauthn")
def step_page() -> Any:
    account = browser.current_account()
    if account is None:
        query = urlencode({"client_id": request.args.get("client_id", "")[:64]})
        return redirect(f"/login?{query}")
    creds = wa.list_credentials(uow.db(), account.id)
    return render_template(
        "webauthn_login.html",
        client=_pending_client(),
        has_credentials=bool(creds),
        csrf_token=browser.csrf_token(),
    )


@bp.post("/login/webauthn/begin")
def authenticate_begin() -> Any:
    got = _json_request("webauthn.authenticate")
    if isinstance(got, Response):
        return got
    account, _body = got
    try:
        options = wa.begin_authentication(
            uow.db(),
            settings(),
            account_id=account.id,
            session_digest=browser.current().id_digest,  # type: ignore[union-attr]
            now=utcnow(),
        )
    except wa.WebAuthnError as exc:
        return _refuse("webauthn.authenticate", account, exc)
    resp = jsonify(options)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/login/webauthn/finish")
def authenticate_finish() -> Any:
    got = _json_request("webauthn.authenticate")
    if isinstance(got, Response):
        return got
    account, body = got
    credential = body.get("credential")
    try:
        done = wa.finish_authentication(
            uow.db(),
            settings(),
            account_id=account.id,
            session_digest=browser.current().id_digest,  # type: ignore[union-attr]
            response=credential,
            now=utcnow(),
        )
    except wa.WebAuthnError as exc:
        return _refuse("webauthn.authenticate", account, exc, credential)
    level = int(done.max_level) if done.max_level is not None else None
    uow.record(
        action="webauthn.authenticate",
        outcome="success",
        actor=account.id,
        subject=account.id,
        reason=f"credential {done.credential_id} signCount={done.sign_count} level={level}",
    )
    # A passkey without acceptable attestation is recorded at low (or None): policies never
    # count it towards substantial (policies.steps._level_of).
    step = complete_step("hwk", level, method="webauthn")
    resp = jsonify(redirect=step.headers.get("Location", "/account"))
    resp.headers["Cache-Control"] = "no-store"
    return resp


# --------------------------------------------------------------------------- management page


def _page(status: int = 200, **ctx: Any) -> Any:
    account = browser.current_account()
    assert account is not None
    return render_template(
        "webauthn_keys.html",
        keys=wa.list_credentials(uow.db(), account.id),
        csrf_token=browser.csrf_token(),
        **ctx,
    ), status


@bp.get("/account/security-keys")
def keys_page() -> Any:
    if browser.current_account() is None:
        return redirect("/login")
    return _page()


@bp.post("/account/security-keys/<key_id>/rename")
def rename(key_id: str) -> Any:
    browser.check_csrf()
    account = browser.current_account()
    if account is None:
        return redirect("/login")
    name = wa.clean_name(request.form.get("name", "")[:1024], "")
    if not name:
        return _page(400, error=_("Please enter a name."))
    try:
        wa.rename_credential(uow.db(), account.id, key_id, name)
    except wa.WebAuthnError as exc:
        uow.record(
            action="webauthn.rename",
            outcome="denied",
            actor=account.id,
            subject=account.id,
            reason=exc.detail,
        )
        return _page(404, error=_("This security key does not exist."))
    uow.record(
        action="webauthn.rename",
        outcome="success",
        actor=account.id,
        subject=account.id,
        reason=f"{key_id} renamed",  # no names: the citizen types them, and audit entries are never erased
    )
    return redirect("/account/security-keys")


@bp.post("/account/security-keys/<key_id>/remove")
def remove(key_id: str) -> Any:
    browser.check_csrf()
    account = browser.current_account()
    if account is None:
        return redirect("/login")
    if not may_change_strong_factors(account):  # else: remove the owner's key, then add one's own
        refusal = _step_up_required()
        uow.record(
            action="webauthn.remove",
            outcome="denied",
            actor=account.id,
            subject=account.id,
            reason=refusal.detail,
            details={"key_id": key_id[:100]},
        )
        return _page(403, error=refusal.description)
    try:
        name = wa.remove_credential(uow.db(), account.id, key_id)
    except wa.WebAuthnError as exc:
        uow.record(
            action="webauthn.remove",
            outcome="denied",
            actor=account.id,
            subject=account.id,
            reason=exc.detail,
        )
        return _page(404, error=_("This security key does not exist."))
    uow.record(
        action="webauthn.remove",
        outcome="success",
        actor=account.id,
        subject=account.id,
        reason=f"{key_id} removed",  # no names (typed by the citizen; audit entries stay)
    )
    notify_factor_change(account, _("A security key was removed from your account: %(name)s.", name=name))
    return redirect("/account/security-keys")
