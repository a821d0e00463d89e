"""Citizen signatures over HTTP (docs/signing.md, docs/device-api.md §7).

Service side (access token of the citizen, scope ``sign``, from a login at *substantial*;
DPoP-bound where the client uses DPoP, the checks of ``idp.oauth.resource``):

- ``POST /api/signatures``: the PDF (``Content-Type: application/pdf``) -> a pending request.
- ``GET /api/signatures/<id>``: ``pending`` / ``denied`` as JSON, or the signed PDF once.

Device side (``Authorization: Device <proof>``, as for PKI-2FA):

- ``GET /api/signatures/pending``: what waits for the device's citizen, prepared for its key.
- ``POST /api/signatures/approve``: the device's signed answer with its CMS signature.

The decisions are in ``signing.citizen_requests``; this module maps them to HTTP and audits
(the document's SHA-256, never the document).
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography import x509
from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy.orm import Session

import pki
import signing
from db import utcnow
from idp import uow
from idp.models import Client, Grant
from idp.oauth.resource import ResourceError, authenticate
from idp.views.smartcard import _body, _device_proof, _error, _ok, _url, ca_in, settings
from policies import Level, parse_acr
from signing import citizen_requests as requests_
from signing.citizen_models import DENIED, FETCHED, PENDING, SIGNED
from smartcard import proof
from smartcard.errors import InvalidProof, InvalidRequest, SmartcardError

bp = Blueprint("signatures", __name__)

SIGN_SCOPE = "sign"
PDF = "application/pdf"


def max_document_bytes() -> int:
    return int(current_app.config.get("CITYID_SIGNING_MAX_BYTES", signing.DEFAULT_MAX_SIZE))


@bp.before_request
def _size_limit() -> None:
    # Flask 3.1: a per-request limit above the application's 1 MiB, for the PDF upload only (the
    # device's JSON keeps 1 MiB); a larger body is refused with 413 before it is read
    if request.endpoint == "signatures.create":
        request.max_content_length = max_document_bytes() + 64 * 1024


# --------------------------------------------------------------------------- the service


def _document_error(exc: signing.DocumentError, actor: str, subject: str, sha256: str | None) -> Response:
    uow.record(
        action="signature.request",
        outcome="denied",
        actor=actor,
        subject=subject,
        reason=exc.code,
        details={"detail": exc.description, "document_sha256": sha256},
    )
    # 413 for a body over the limit (RFC 9110 §15.5.14), 400 for every other unusable document
    status = 413 if isinstance(exc, signing.DocumentTooLarge) else 400
    return _ok({"error": exc.code, "error_description": exc.description}, status)


def _service() -> tuple[dict[str, Any], Grant, Client]:
    """The access token (scope ``sign``), the grant behind it (a citizen's, at substantial)."""
    claims = authenticate(SIGN_SCOPE)
    db = uow.db()
    grant = db.get(Grant, str(claims.get("gid", "")))
    client = db.get(Client, str(claims.get("client_id", "")))
    if grant is None or grant.account_id is None or client is None:
        raise ResourceError(403, "insufficient_scope", "the token does not act for a citizen")
    level = parse_acr(grant.acr) if grant.acr else None
    if level is None or level < Level.SUBSTANTIAL:
        # RFC 9470 §3: the citizen must have logged in at substantial for this
        uow.record(
            action="signature.request",
            outcome="denied",
            actor=client.client_id,
            subject=grant.account_id,
            reason="insufficient_user_authentication",
            details={"acr": grant.acr},
        )
        resp = ResourceError(
            401, "insufficient_user_authentication", "a signature needs a login at substantial"
        )
        raise resp
    return claims, grant, client


def _refuse(err: ResourceError, action: str) -> Response:
    if err.error != "insufficient_user_authentication":  # that one is audited where it is decided
        uow.record(
            action=action,
            outcome="denied",
            actor="unknown",
            subject=request.path,
            reason=err.error,
            details={"detail": err.description},
        )
    resp = err.response()
    if err.error == "insufficient_user_authentication":
        resp.headers["WWW-Authenticate"] = (
            f'Bearer error="insufficient_user_authentication", '
            f'error_description="{err.description}", acr_values="{Level.SUBSTANTIAL.acr}"'
        )
    return resp


@bp.post("/api/signatures")
def create() -> Any:
    try:
        _claims, grant, client = _service()
    except ResourceError as err:
        return _refuse(err, "signature.request")
    assert grant.account_id is not None
    actor, subject = client.client_id, grant.account_id
    if request.mimetype != PDF:
        return _document_error(signing.NotAPdf(f"Content-Type {request.mimetype}"), actor, subject, None)
    if (request.content_length or 0) > max_document_bytes():  # refused before it is read
        return _document_error(
            signing.DocumentTooLarge(f"{request.content_length} bytes"),
            actor,
            subject,
            None,
        )
    data = request.get_data(cache=False)
    sha256 = hashlib.sha256(data).hexdigest() if data else None
    level = request.args.get("level", "B-LT")
    reason = request.args.get("reason")
    try:
        row = requests_.create(
            uow.db(),
            account_id=grant.account_id,
            client_id=client.client_id,
            service_name=client.name,
            data=data,
            level=level,
            reason=reason,
            now=utcnow(),
            max_size=max_document_bytes(),
        )
    except signing.DocumentError as exc:
        return _document_error(exc, actor, subject, sha256)
    except SmartcardError as exc:
        uow.record(
            action="signature.request",
            outcome="denied",
            actor=actor,
            subject=subject,
            reason=exc.code,
            details={"detail": exc.detail, "document_sha256": sha256},
        )
        return _ok({"error": exc.code, "error_description": exc.description}, exc.status)
    uow.record(
        action="signature.request",
        outcome="success",
        actor=actor,
        subject=subject,
        reason=f"{row.level}, {row.pages} page(s)",
        details={"request": row.id, "document_sha256": row.document_sha256, "size": row.size},
    )
    return _ok(_status_json(row), 201)


def _status_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.state,
        "document": {"title": row.title, "pages": row.pages, "sha256": row.document_sha256},
        "level": row.level,
        "expires_at": row.expires_at.isoformat(),
    }


@bp.get("/api/signatures/<request_id>")
def fetch(request_id: str) -> Any:
    try:
        _claims, grant, client = _service()
    except ResourceError as err:
        return _refuse(err, "signature.fetch")
    assert grant.account_id is not None
    now = utcnow()
    try:
        row = requests_.view(
            uow.db(), request_id, client_id=client.client_id, account_id=grant.account_id, now=now
        )
        if row.state == FETCHED:
            raise requests_.Gone("already fetched")
        if row.state in (PENDING, DENIED):
            return _ok(_status_json(row), 202 if row.state == PENDING else 200)
        assert row.state == SIGNED
        digest = row.document_sha256
        pdf = requests_.take_signed(uow.db(), row, now)
    except SmartcardError as exc:
        return _error(exc, "signature.fetch", actor=client.client_id, subject=grant.account_id)
    uow.record(
        action="signature.fetch",
        outcome="success",
        actor=client.client_id,
        subject=grant.account_id,
        reason="signed document fetched; document deleted",
        details={"request": request_id[:40], "document_sha256": digest},
    )
    resp = Response(pdf, mimetype=PDF)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Content-Disposition"] = f'attachment; filename="signed-{request_id[:40]}.pdf"'
    return resp


# --------------------------------------------------------------------------- the device


def _chain(ca: pki.CertificateAuthority) -> list[x509.Certificate]:
    return [ca.certificate, ca.root_certificate]


@bp.get("/api/signatures/pending")
def pending() -> Any:
    token = _device_proof()
    db = uow.db()
    ca = ca_in(db)
    try:
        if token is None:
            raise InvalidProof("no device proof", "send Authorization: Device <proof>")
        verified = proof.verify(
            db, ca, token, method="GET", url=_url(), now=utcnow(), window=settings().proof_window
        )
    except SmartcardError as exc:
        return _error(exc, "signature.pending")
    items = requests_.pending_for(
        db,
        device_id=verified.device_id,
        account_id=verified.account_id,
        certificate_der=verified.certificate_der,
        chain=_chain(ca),
        now=utcnow(),
    )
    return _ok(
        {
            "pending": [
                {
                    "id": p.id,
                    "service_name": p.service_name,
                    "title": p.title,
                    "pages": p.pages,
                    "document_sha256": p.document_sha256,
                    "reason": p.reason,
                    "level": p.level,
                    "to_be_signed": p.to_be_signed,
                    "signed_attributes": p.signed_attributes,
                    "expires_at": p.expires_at.isoformat(),
                }
                for p in items
            ]
        }
    )


@bp.post("/api/signatures/approve")
def approve() -> Any:
    db = uow.db()
    ca = ca_in(db)
    try:
        token = _body().get("approval")
        if not isinstance(token, str):
            raise InvalidRequest("approval (a device-signed JWS) is required")
        result = requests_.answer(
            db, ca, settings(), token, url=_url(), now=utcnow(), finisher=finisher(db, ca)
        )
    except SmartcardError as exc:
        return _error(exc, "signature.approve")
    except (signing.TimeStampFailed, signing.RevocationDataMissing) as exc:
        uow.record(
            action="signature.approve",
            outcome="failure",
            actor="unknown",
            subject=request.path,
            reason="temporarily_unavailable",
            details={"detail": exc.detail[:300]},
        )
        return _ok({"error": "temporarily_unavailable", "error_description": exc.description}, 503)
    uow.record(
        action="signature.approve",
        outcome="success" if result.decision == SIGNED else "denied",
        actor=result.device_id,
        subject=result.account_id,
        reason=result.decision,
        details={"request": result.id, "client": result.client_id, "document_sha256": result.document_sha256},
    )
    return _ok({"status": result.decision})


# --------------------------------------------------------------------------- finishing


def finisher(db: Session, ca: pki.CertificateAuthority) -> requests_.Finisher:
    """The second half with cityid's own TSA and revocation data (``idp.signing_kit``)."""

    def run(prepared: signing.Prepared, signature: bytes) -> bytes:
        from idp import signing_kit

        try:
            ctx = signing_kit.context(db, ca)
        except pki.PkiError as exc:  # no active TSA certificate: `cityid init`
            raise signing.TimeStampFailed(str(exc)) from exc
        return signing.finish(prepared, signature, ctx)

    return run


def init_app(app: Flask, srv: Any) -> None:
    app.config.setdefault("CITYID_SIGNING_MAX_BYTES", signing.DEFAULT_MAX_SIZE)
