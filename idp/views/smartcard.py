"""The virtual smartcard over HTTP: the device JSON API and the PKI-2FA login step.

Device API (docs/device-api.md); errors are always ``{"error", "error_description"}``:

- ``POST /api/smartcard/challenge``: enrolment challenge (access token with scope
  ``smartcard:enroll``, DPoP-bound), or, with ``Authorization: Device <proof>``, a renewal one.
- ``POST /api/smartcard/enroll``: CSR + attestation + name -> certificate chain.
- ``GET /api/smartcard/pending``: the PKI-2FA challenges waiting for this device's citizen.
- ``POST /api/smartcard/approve``: a device-signed answer over challenge + binding data.
- ``POST /api/smartcard/renew``: a new certificate, asked for with the current key.

Login step: ``/login/device`` shows the binding code and service name; the browser polls
``/login/device/status`` (``static/device-poll.js``) or presses "check again"; once the device
approved, ``complete_step("hwk", …)`` continues the pending authorization.

Only views here: the decisions are in ``smartcard/``; this module maps them to HTTP and audits.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from flask import Blueprint, Flask, Response, abort, current_app, jsonify, redirect, render_template, request
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import select, update
from sqlalchemy.orm import Session

import pki
from attestation import AndroidApp, AppIdentity, AppleApp, RevocationList, TrustStore
from attestation.config import APPLE_APP_ATTEST_ROOT_FILES, GOOGLE_ROOT_FILES, packaged_roots
from db import utcnow
from idp import browser, levels, uow
from idp.insights import funnel
from idp.instance import InstanceKeys
from idp.models import Account, Client, Grant, LoginSession
from idp.oauth import mtls
from idp.oauth.resource import ResourceError, authenticate
from idp.oauth.server import revoke_grant
from idp.ocsp_wsgi import load_issuing_ca
from idp.runtime import runtime
from idp.views.account import local_time, notify_factor_change
from idp.views.auth import complete_step
from idp.views.pki import pki_holder
from policies import Level, parse_acr
from smartcard import authenticate as pki2fa
from smartcard import challenges, devices
from smartcard.enroll import EnrolRequest, EnrolResult, enrol
from smartcard.errors import InvalidProof, InvalidRequest, SmartcardError, StepUpRequired
from smartcard.models import ENROL, Device
from smartcard.renew import renew, renewal_challenge
from smartcard.revoke import RevokedDevice
from smartcard.settings import SmartcardSettings
from smartcard.wire import evidence_from_json

bp = Blueprint("smartcard", __name__)

ENROL_SCOPE = "smartcard:enroll"
DEVICE_SCHEME = "device"


# --------------------------------------------------------------------------- settings


def settings_from_config() -> SmartcardSettings:
    """Built once per application from ``Config.smartcard`` (trust anchors, app identity)."""

    cfg = runtime().config
    sc = cfg.smartcard
    google: list[x509.Certificate] = list(packaged_roots(*GOOGLE_ROOT_FILES)) if sc.vendor_roots else []
    apple = list(packaged_roots(*APPLE_APP_ATTEST_ROOT_FILES)) if sc.vendor_roots else []
    if sc.extra_android_roots_file:
        google += x509.load_pem_x509_certificates(Path(sc.extra_android_roots_file).read_bytes())
    apps: list[AppIdentity] = []
    if sc.android_package:
        digests = frozenset(
            bytes.fromhex(d.strip()) for d in sc.android_signing_digests.split(",") if d.strip()
        )
        apps.append(AndroidApp(sc.android_package, digests))
    if sc.apple_team_id and sc.apple_bundle_id:
        apps.append(AppleApp(sc.apple_team_id, sc.apple_bundle_id))
    revocations = None
    if sc.android_revocation_list_file:
        path = Path(sc.android_revocation_list_file)
        fetched = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
        revocations = RevocationList.from_json(path.read_bytes(), fetched_at=fetched)
    return SmartcardSettings(
        trust=TrustStore.of(
            google_roots=google, apple_app_attest_roots=apple, android_revocations=revocations
        ),
        apps=tuple(apps),
        challenge_ttl=dt.timedelta(seconds=sc.challenge_ttl_seconds),
        auth_ttl=dt.timedelta(seconds=sc.challenge_ttl_seconds),
        allow_software_keys=sc.allow_software_keys,
        renew_before=dt.timedelta(days=sc.renew_before_days),
        renew_requires_attestation=sc.renew_requires_attestation,
        certificate_validity=dt.timedelta(days=sc.certificate_validity_days)
        if sc.certificate_validity_days
        else None,
    )


def settings() -> SmartcardSettings:
    """Cached; rebuilt when the revocation status list file changes (a cron job refreshes it)."""
    holder: dict[str, Any] = current_app.extensions.setdefault("cityid.smartcard", {})
    path = runtime().config.smartcard.android_revocation_list_file
    stamp = Path(path).stat().st_mtime if path and Path(path).exists() else None
    if "settings" not in holder or holder.get("stamp") != stamp:
        holder["settings"] = settings_from_config()
        holder["stamp"] = stamp
    built: SmartcardSettings = holder["settings"]
    return built


def ca_in(session: Session) -> pki.CertificateAuthority:
    """The issuing CA, loaded once per application through ``session`` (the request's own: a
    second SQLite session would wait for this one's write lock), shared with ``idp.views.pki``."""
    try:
        return load_issuing_ca(runtime(), pki_holder(current_app), session)
    except pki.PkiError:
        abort(503)


def _ca() -> pki.CertificateAuthority:
    return ca_in(uow.db())


# --------------------------------------------------------------------------- edges


def _error(exc: SmartcardError, action: str, actor: str = "unknown", subject: str = "") -> Response:
    uow.record(
        action=action,
        outcome="denied",
        actor=actor,
        subject=subject or request.path,
        reason=exc.code,
        details={"detail": exc.detail},
    )
    resp = jsonify(error=exc.code, error_description=exc.description)
    resp.status_code = exc.status
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object", "the body must be a JSON object")
    return data


def _url() -> str:
    return f"{runtime().config.issuer}{request.path}"


def _device_proof() -> str | None:
    scheme, _sep, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == DEVICE_SCHEME and value.strip() else None


def _token_account() -> tuple[dict[str, Any], str]:
    """The access token's claims and account: DPoP-bound, scope ``smartcard:enroll``."""
    claims = authenticate(ENROL_SCOPE)
    if not (claims.get("cnf") or {}).get("jkt"):
        # the app's enrolment token must be sender-constrained (RFC 9449 §7)
        raise ResourceError(401, "invalid_token", "a DPoP-bound access token is required", scheme="DPoP")
    grant = uow.db().get(Grant, str(claims.get("gid", "")))
    if grant is None or grant.account_id is None:
        raise ResourceError(403, "insufficient_scope", "the token does not act for a citizen")
    return claims, grant.account_id


def _ok(data: dict[str, Any], status: int = 200) -> Response:
    resp = jsonify(data)
    resp.status_code = status
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _label(level: Level | None) -> str:
    return level.label if level else "-"


def _enrol_json(r: EnrolResult) -> dict[str, Any]:
    return {
        "device_id": r.device_id,
        "certificate": r.certificate_pem.decode(),
        "chain": r.certificate_pem.decode() + r.chain_pem.decode(),
        "serial": r.serial,
        "not_after": r.not_after.isoformat(),
        "type": r.device_type,
        "security_level": r.security_level,
        "max_level": r.max_level.label if r.max_level else None,
        "assessment": {"code": r.reason_code, "text": r.reason_text},
    }


# --------------------------------------------------------------------------- device API


@bp.post("/api/smartcard/challenge")
def challenge() -> Any:
    token = _device_proof()
    if token is not None:  # a renewal challenge, asked for with the current device key
        try:
            ch = renewal_challenge(uow.db(), _ca(), settings(), token, url=_url(), now=utcnow())
        except SmartcardError as exc:
            return _error(exc, "smartcard.challenge")
        return _ok(
            {"challenge": ch.challenge, "purpose": "renew", "expires_at": ch.expires_at.isoformat()}, 201
        )
    try:
        _claims, account_id = _token_account()
    except ResourceError as err:
        return err.response()
    issued, _row = challenges.create(
        uow.db(), purpose=ENROL, account_id=account_id, ttl=settings().challenge_ttl, now=utcnow()
    )
    uow.record(
        action="smartcard.challenge", outcome="success", actor=account_id, subject=account_id, reason="enroll"
    )
    return _ok(
        {
            "challenge": issued.value,
            "purpose": "enroll",
            "expires_in": int(settings().challenge_ttl.total_seconds()),
            "expires_at": issued.expires_at.isoformat(),
        },
        201,
    )


@bp.post("/api/smartcard/enroll")
def enroll() -> Any:
    try:
        claims, account_id = _token_account()
    except ResourceError as err:
        return err.response()
    try:
        _may_enrol(account_id, str(claims.get("gid", "")))
        body = _body()
        csr = body.get("csr")
        if not isinstance(csr, str) or len(csr) > 16_000:
            raise InvalidRequest("csr must be a PEM or base64url DER string")
        csr_bytes = (
            csr.encode() if csr.lstrip().startswith("-----BEGIN") else challenges.b64url_decode(csr, "csr")
        )
        req = EnrolRequest(
            account_id=account_id,
            challenge=str(body.get("challenge", ""))[:100],
            csr=csr_bytes,
            evidence=evidence_from_json(body.get("attestation")),
            name=body.get("name", ""),
            dpop_jkt=claims["cnf"]["jkt"],
            grant_id=str(claims.get("gid")),
        )
        result = enrol(uow.db(), _ca(), settings(), req, now=utcnow())
    except SmartcardError as exc:
        return _error(exc, "smartcard.enroll", actor=account_id, subject=account_id)
    uow.record(
        action="smartcard.enroll",
        outcome="success",
        actor=account_id,
        subject=account_id,
        reason=f"{result.device_type}/{result.security_level}: max {_label(result.max_level)}",
        details={"device_id": result.device_id, "serial": result.serial, "assessment": result.reason_code},
    )
    account = uow.db().get(Account, account_id)
    if account is not None:
        name = req.name[:100] if isinstance(req.name, str) and req.name.strip() else result.device_type
        with force_locale(account.locale or "de"):  # the app's request is not in the citizen's language
            notify_factor_change(account, _("A device was added to your account: %(name)s.", name=name))
    return _ok(_enrol_json(result), 201)


def _may_enrol(account_id: str, grant_id: str) -> None:
    """A password alone must not add a device next to a means at substantial (a phished password
    plus the attacker's own genuine phone would reach substantial): then the app's token must
    come from an authorization at substantial within the last ten minutes (eIDAS 2015/1502
    Annex 2.2.4; NIST SP 800-63B §6.1.2.1). The first device of an account is bound with the
    password (docs/device-api.md), and the citizen is told by e-mail either way."""
    account = uow.db().get(Account, account_id)
    grant = uow.db().get(Grant, grant_id)
    if account is None or grant is None or not levels.holds_strong_factor(uow.db(), account):
        return
    level = parse_acr(grant.acr) if grant.acr else None
    # auth_time: the oldest factor the login counted (the app asks with max_age=600); a grant
    # made now from a session that proved its device hours ago is not fresh
    age = time.time() - grant.auth_time if grant.auth_time is not None else None
    if (
        level is None
        or level < Level.SUBSTANTIAL
        or age is None
        or age > browser.RECENT_STRONG_FACTOR_SECONDS
    ):
        raise StepUpRequired("token of a login below substantial or with factors older than ten minutes")


@bp.get("/api/smartcard/pending")
def pending() -> Any:
    from smartcard import proof

    token = _device_proof()
    try:
        if token is None:
            raise InvalidProof("no device proof", "send Authorization: Device <proof>")
        verified = proof.verify(
            uow.db(), _ca(), token, method="GET", url=_url(), now=utcnow(), window=settings().proof_window
        )
    except SmartcardError as exc:
        return _error(exc, "smartcard.pending")
    items = pki2fa.pending_for(uow.db(), verified.device_id, verified.account_id, utcnow())
    return _ok(
        {
            "pending": [
                {
                    "id": p.public_id,
                    "challenge": p.challenge,
                    "binding_code": p.binding_code,
                    "service_name": p.service_name,
                    "amount": p.amount,
                    "level": p.level.acr,
                    "expires_at": p.expires_at.isoformat(),
                }
                for p in items
            ]
        }
    )


@bp.post("/api/smartcard/approve")
def approve() -> Any:
    try:
        token = _body().get("approval")
        if not isinstance(token, str):
            raise InvalidRequest("approval (a device-signed JWS) is required")
        result = pki2fa.approve(uow.db(), _ca(), settings(), token, url=_url(), now=utcnow())
    except SmartcardError as exc:
        return _error(exc, "smartcard.approve")
    uow.record(
        action="smartcard.approve",
        outcome="success" if result.decision == "approved" else "denied",
        actor=result.device_id,
        subject=result.account_id,
        reason=result.decision,
        details={"challenge": result.public_id},
    )
    return _ok({"status": result.decision})


@bp.post("/api/smartcard/renew")
def renew_certificate() -> Any:
    try:
        token = _body().get("renewal")
        if not isinstance(token, str):
            raise InvalidRequest("renewal (a device-signed JWS) is required")
        result = renew(uow.db(), _ca(), settings(), token, url=_url(), now=utcnow())
    except SmartcardError as exc:
        return _error(exc, "smartcard.renew")
    moved = _carry_certificate_binding(result)
    uow.record(
        action="smartcard.renew",
        outcome="success",
        actor=result.device_id,
        subject=result.device_id,
        reason=f"max {_label(result.max_level)}",
        details={"serial": result.serial, "bound_grants_moved": moved},
    )
    return _ok(_enrol_json(result), 201)


def _carry_certificate_binding(result: EnrolResult) -> int:
    """Grants bound to the old certificate (RFC 8705 §4: a public client's refresh tokens) move
    to the new one: the renewal was asked for with the old certificate's key, which the device
    still holds or rotated itself. Else every renewal would end the app's login."""
    if result.replaced_fingerprint_sha256 is None:
        return 0
    moved = uow.db().execute(
        update(Grant)
        .where(
            Grant.cnf_x5t == mtls.thumbprint_of_digest(bytes.fromhex(result.replaced_fingerprint_sha256)),
            Grant.revoked_at.is_(None),
        )
        .values(cnf_x5t=mtls.thumbprint_of_digest(bytes.fromhex(result.fingerprint_sha256)))
        .execution_options(synchronize_session=False)
    )
    return int(moved.rowcount or 0)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- login step


def _service_name(client: Client | None) -> str:
    """What the device shows as the requesting service."""
    return client.name if client is not None else runtime().config.branding.city_name


def _pending_request() -> tuple[Client | None, str | None]:
    """The waiting authorization's client and, for a payment, its amount (RFC 9396
    ``authorization_details`` ``instructedAmount``)."""
    s = browser.current()
    if s is None or not s.pending:
        return None, None
    url = str(json.loads(s.pending).get("url", ""))
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    client = uow.db().get(Client, q.get("client_id", "")[:64]) if q.get("client_id") else None
    amount = None
    if "payment" in q.get("scope", "").split():
        try:
            details = json.loads(q.get("authorization_details", "[]"))
            for item in details if isinstance(details, list) else []:
                money = item.get("instructedAmount") if isinstance(item, dict) else None
                if isinstance(money, dict):
                    amount = (
                        f"{str(money.get('amount', ''))[:20]} {str(money.get('currency', ''))[:3]}".strip()
                    )
                    break
        except (ValueError, RecursionError):  # not JSON, or nested too deep
            amount = None
    return client, amount


def _step_context() -> tuple[Any, Any] | None:
    account = browser.current_account()
    s = browser.current()
    if account is None or s is None or "pwd" not in browser.factors(s):
        return None
    return account, s


@bp.get("/login/device")
def device_step() -> Any:
    ctx = _step_context()
    if ctx is None:
        return redirect("/login" + (f"?{request.query_string.decode()}" if request.query_string else ""))
    account, s = ctx
    client, amount = _pending_request()
    login = pki2fa.start(
        uow.db(),
        settings(),
        account_id=account.id,
        session_sid=s.sid,
        service_name=_service_name(client),
        amount=amount,
        level=Level.SUBSTANTIAL,
        now=utcnow(),
    )
    uow.record(
        action="smartcard.login_challenge",
        outcome="info",
        actor=account.id,
        subject=client.client_id if client else "",
        reason="waiting for device",
        details={"challenge": login.public_id},
    )
    return render_template(
        "stepup_device.html",
        login=login,
        client=client,
        csrf_token=browser.csrf_token(),
        valid_until=local_time(login.expires_at),  # WCAG 2.1 2.2.1: the time limit is stated
    )


@bp.get("/login/device/status")
def device_status() -> Any:
    ctx = _step_context()
    if ctx is None:
        return _ok({"error": "login_required", "error_description": "no login in progress"}, 401)
    account, s = ctx
    try:
        st = pki2fa.status(
            uow.db(), request.args.get("id", ""), account_id=account.id, session_sid=s.sid, now=utcnow()
        )
    except SmartcardError as exc:
        return _ok({"error": exc.code, "error_description": exc.description}, 404)
    return _ok({"status": st.state})


@bp.post("/login/device")
def device_continue() -> Any:
    browser.check_csrf()
    ctx = _step_context()
    if ctx is None:
        return redirect("/login")
    account, s = ctx
    public_id = request.form.get("id", "")[:40]
    try:
        st = pki2fa.status(uow.db(), public_id, account_id=account.id, session_sid=s.sid, now=utcnow())
        if st.state == "pending":
            client, _amount = _pending_request()
            return render_template(
                "stepup_device.html",
                login=st,
                client=client,
                csrf_token=browser.csrf_token(),
                not_yet=True,
                valid_until=local_time(st.expires_at),
            )
        client, amount = _pending_request()
        taken = pki2fa.take(
            uow.db(),
            public_id,
            account_id=account.id,
            session_sid=s.sid,
            now=utcnow(),
            service_name=_service_name(client),
            amount=amount,
            level=Level.SUBSTANTIAL,
        )
    except SmartcardError as exc:
        funnel.step(funnel.STEPUP, "failed", method="device")
        uow.record(
            action="login.pki2fa",
            outcome="denied",
            actor=account.id,
            subject=account.id,
            reason=exc.code,
            details={"detail": exc.detail},
        )
        return render_template(
            "message.html",
            title=_("Not confirmed"),
            status="error",
            message=_("The confirmation on your device was declined or has expired. Please start again."),
            link=request.full_path.replace("/login/device", "/login/device", 1),
            link_text=_("Try again"),
        ), 403
    level = int(taken.device_max_level) if taken.device_max_level else None
    uow.record(
        action="smartcard.pki2fa",
        outcome="success",
        actor=taken.device_id,
        subject=account.id,
        reason=f"device level {level}",
        details={"challenge": taken.public_id},
    )
    response = complete_step("hwk", level, method="pki2fa", platform=_platform(taken.device_id))
    uow.db().flush()  # the renewed session gets its sid on flush
    renewed = browser.current()
    if renewed is not None and renewed.sid:
        pki2fa.rebind(uow.db(), taken.public_id, renewed.sid)
    return response


def _platform(device_id: str) -> str:
    """The device's platform for the login funnel (android, ios, software): never the device."""
    device = uow.db().get(Device, device_id)
    return funnel.platform_of(device.type) if device is not None else ""


# --------------------------------------------------------------------------- revocation glue


def end_device_bindings(session: Session, revoked: RevokedDevice) -> None:
    """Tokens and sessions bound to a removed device end with it (ARCHITECTURE, flow 6)."""
    for gid in revoked.grant_ids:
        revoke_grant(session, gid, "device removed")
    device = session.get(Device, revoked.device_id)
    if device is not None:
        # RFC 8705 §4: the city app's token families bound to the device certificate
        x5t = mtls.thumbprint_of_digest(bytes.fromhex(device.cert_fingerprint))
        for gid in session.execute(
            select(Grant.id).where(
                Grant.account_id == revoked.account_id, Grant.cnf_x5t == x5t, Grant.revoked_at.is_(None)
            )
        ).scalars():
            revoke_grant(session, gid, "device removed")
    if revoked.dpop_jkt:
        # RFC 9449 §6: token families bound to the device app's DPoP key
        for gid in session.execute(
            select(Grant.id).where(
                Grant.account_id == revoked.account_id,
                Grant.cnf_jkt == revoked.dpop_jkt,
                Grant.revoked_at.is_(None),
            )
        ).scalars():
            revoke_grant(session, gid, "device removed")
    if revoked.session_sids:
        # grants that this device's PKI-2FA stepped up (amr hwk) end; sessions lose the factor
        for g in session.execute(
            select(Grant).where(Grant.sid.in_(revoked.session_sids), Grant.revoked_at.is_(None))
        ).scalars():
            if "hwk" in json.loads(g.amr or "[]"):
                revoke_grant(session, g.id, "device removed")
        for ls in session.execute(
            select(LoginSession).where(LoginSession.sid.in_(revoked.session_sids))
        ).scalars():
            factors = json.loads(ls.factors or "{}")
            if factors.pop("hwk", None) is not None:
                session.execute(
                    update(LoginSession)
                    .where(LoginSession.id_digest == ls.id_digest)
                    .values(factors=json.dumps(factors))
                )


def revoke_for(session: Session, ca: pki.CertificateAuthority) -> Callable[..., RevokedDevice]:
    """Device removal in the caller's transaction (the request's, or the CLI's), with the end of
    what was bound to the device; nothing is committed before the caller's audit entry and mail."""
    from smartcard.revoke import revoke_device

    def run(device_id: str, **kw: Any) -> RevokedDevice:
        return revoke_device(session, ca, device_id, end_bindings=end_device_bindings, commit=False, **kw)

    return run


# --------------------------------------------------------------------------- hooks


def device_account_facts(session: Session, account_id: str) -> dict[str, Any]:
    """levels.ACCOUNT_FACT_HOOKS: active, unrevoked, unexpired smartcards."""
    return {"devices": devices.account_device_facts(session, account_id, utcnow())}


def export_devices(session: Session, keys: InstanceKeys, account_id: str) -> dict[str, Any]:
    """privacy.EXPORT_HOOKS: the account's devices (no keys, no secrets)."""
    return devices.export(session, account_id)


def delete_devices(session: Session, account_id: str) -> None:
    """privacy.DELETE_HOOKS: every certificate of the account revoked before it goes."""
    from smartcard.revoke import revoke_account_devices

    if session.execute(select(Device.id).where(Device.account_id == account_id).limit(1)).first() is None:
        return  # nothing to revoke: do not need (or load) the CA
    revoke_account_devices(  # in the erasure's transaction: all of it happens, or none
        session,
        ca_in(session),
        account_id,
        actor=account_id,
        reason="account deleted",
        now=utcnow(),
        commit=False,
    )


def init_app(app: Flask, srv: Any) -> None:
    if device_account_facts not in levels.ACCOUNT_FACT_HOOKS:
        levels.ACCOUNT_FACT_HOOKS.append(device_account_facts)
    try:
        from idp import privacy
    except ImportError:  # pragma: no cover - privacy is another engineer's module
        return
    if export_devices not in privacy.EXPORT_HOOKS:
        privacy.EXPORT_HOOKS.append(export_devices)
    if delete_devices not in privacy.DELETE_HOOKS:
        privacy.DELETE_HOOKS.append(delete_devices)
