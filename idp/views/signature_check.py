"""Anyone checks a signed or sealed PDF: ``POST /api/signatures/validate`` (JSON, no login) and
the citizen page ``/signatures/check`` ("Check a signed document", upload form with CSRF).

Both run ``signing.validate`` with the city root as trust anchor, only on what the document
embeds (its DSS) plus this instance's own certificate status for "valid now": no responder or
CRL URL named in an uploaded file is fetched (an anonymous upload must not make the server
call addresses of the uploader's choosing; OWASP SSRF). Size-limited like signing (20 MiB by
default); every request is audited by the document's SHA-256, never the document.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Blueprint, Response, render_template, request
from flask_babel import gettext as _

import pki
import signing
from db import utcnow
from idp import browser, uow
from idp.views.signatures import PDF, max_document_bytes
from idp.views.smartcard import _ok, ca_in
from signing.validate import SignatureReport, ValidationResult, validate

bp = Blueprint("signature_check", __name__)


@bp.before_request
def _size_limit() -> None:
    # Flask 3.1: per request, above the application's 1 MiB; larger bodies get 413 unread
    request.max_content_length = max_document_bytes() + 64 * 1024


def _run(pdf: bytes) -> ValidationResult:
    signing.inspect(pdf, max_size=max_document_bytes())  # refuse bad input before anything else
    db = uow.db()
    ca = ca_in(db)

    def status_now(cert: x509.Certificate) -> bool | None:
        try:  # RFC 5280 §6.3 / RFC 6960 §2.2: our CA's record, now
            return pki.status_of_certificate(db, cert.public_bytes(Encoding.DER)).is_good()
        except pki.PkiError:
            return None  # not one of ours: undecided without fetching

    return validate(
        pdf, [ca.root_certificate], online=False, status_now=status_now, max_size=max_document_bytes()
    )


def _audit(pdf: bytes, result: ValidationResult | None, refusal: str, channel: str) -> None:
    uow.record(
        action="signature.validate",
        outcome="denied" if result is None else "info",
        actor="anonymous",
        subject=channel,
        reason=refusal or ("valid" if result is not None and result.valid else "not valid"),
        details={
            "document_sha256": hashlib.sha256(pdf).hexdigest() if pdf else None,
            "signatures": 0 if result is None else len(result.signatures),
        },
    )


def _report_json(s: SignatureReport) -> dict[str, Any]:
    out = dataclasses.asdict(s)
    for k in ("claimed_time", "timestamp"):
        out[k] = out[k].isoformat() if out[k] is not None else None
    out["problems"] = list(s.problems)
    out["ok"] = s.ok
    return out


def result_json(result: ValidationResult) -> dict[str, Any]:
    return {
        "document_sha256": result.document_sha256,
        "valid": result.valid,
        "checked_at": utcnow().isoformat(),
        "signatures": [_report_json(s) for s in result.signatures],
    }


@bp.post("/api/signatures/validate")
def validate_api() -> Any:
    if (request.content_length or 0) > max_document_bytes():
        _audit(b"", None, "document_too_large", "api")
        return _ok(
            {"error": "document_too_large", "error_description": signing.DocumentTooLarge.description}, 413
        )
    if request.mimetype != PDF:
        _audit(b"", None, "not_a_pdf", "api")
        return _ok({"error": "not_a_pdf", "error_description": f"send the document as {PDF}"}, 400)
    pdf = request.get_data(cache=False)
    try:
        result = _run(pdf)
    except signing.DocumentError as exc:
        _audit(pdf, None, exc.code, "api")
        status = 413 if isinstance(exc, signing.DocumentTooLarge) else 400
        return _ok({"error": exc.code, "error_description": exc.description}, status)
    _audit(pdf, result, "", "api")
    return _ok(result_json(result))


# --------------------------------------------------------------------------- citizen page


_REFUSALS = {
    "empty_document": lambda: _("The file is empty."),
    "document_too_large": lambda: _(
        "The file is too large. At most %(mib)s MiB can be checked.",
        mib=max_document_bytes() // (1024 * 1024),
    ),
    "not_a_pdf": lambda: _("This file is not a PDF document."),
    "encrypted_pdf": lambda: _("This PDF is protected with a password and cannot be checked."),
    "broken_pdf": lambda: _("This PDF is damaged and cannot be read."),
}


def _page(result: ValidationResult | None = None, error: str | None = None, status: int = 200) -> Response:
    html = render_template(
        "signature_check.html",
        result=result,
        error=error,
        csrf_token=browser.csrf_token(),
        max_mib=max_document_bytes() // (1024 * 1024),
    )
    return Response(html, status=status, mimetype="text/html")


@bp.get("/signatures/check")
def check_page() -> Any:
    return _page()


@bp.post("/signatures/check")
def check_upload() -> Any:
    browser.check_csrf()
    upload = request.files.get("document")
    pdf = upload.read(max_document_bytes() + 1) if upload is not None else b""
    try:
        if upload is None or not upload.filename:
            raise signing.EmptyDocument("no file chosen")
        result = _run(pdf)
    except signing.DocumentError as exc:
        _audit(pdf, None, exc.code, "page")
        message = _REFUSALS.get(exc.code, lambda: _("This file cannot be checked."))()
        return _page(error=message, status=413 if isinstance(exc, signing.DocumentTooLarge) else 400)
    _audit(pdf, result, "", "page")
    return _page(result=result)
