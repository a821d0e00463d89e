"""The life of a citizen signature request: service asks, device shows and signs, service fetches.

1. ``create``: a relying service's PDF (checked by :func:`signing.inspect`) for one
   citizen who has a device able to confirm *substantial*.
2. ``pending_for``: a device (by its proof) fetches what waits for its citizen; each request is
   prepared for *that* device's certificate (the signed attributes name it, signing-certificate-v2).
3. ``answer``: the device's signed answer (a device proof, ``smartcard.proof``) carrying what it
   showed (title, pages, SHA-256, service) and its signature over the signed attributes; cityid
   checks all of it against the request, checks the signature with the device certificate and
   finishes the PAdES signature.
4. ``fetch``: the service takes the signed PDF once; the document is then gone.

Every refusal raises (a :class:`smartcard.errors.SmartcardError`); the caller rolls back, so a
refused answer changes nothing. No Flask.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

import pki
from policies import Level
from signing.citizen_models import DENIED, FETCHED, PENDING, SIGNED, CitizenSignatureRequest
from signing.errors import SignatureMismatch, UnknownLevel
from signing.inputs import DEFAULT_MAX_SIZE, inspect
from signing.pades import Level as PadesLevel
from signing.pades import Prepared, check_signature, prepare
from smartcard import proof
from smartcard.errors import InsufficientDeviceLevel, InvalidRequest, SmartcardError
from smartcard.models import Device
from smartcard.settings import SmartcardSettings

TTL = dt.timedelta(minutes=15)  # issue 13: documents are not kept longer
MAX_REASON = 200
MAX_PENDING = 10  # per citizen: a service cannot flood a device (or our storage) with documents


class NoSigningDevice(SmartcardError):
    code = "no_signing_device"
    status = 403
    description = "the citizen has no device that can sign at substantial"


class TooManyPending(SmartcardError):
    code = "too_many_requests"
    status = 429
    description = "too many documents are waiting for this citizen's signature; try again later"


class UnknownRequest(SmartcardError):
    code = "not_found"
    status = 404
    description = "no such signature request"


class RequestAnswered(SmartcardError):
    code = "request_answered"
    status = 409
    description = "the signature request was already answered or has expired"


class DocumentMismatch(SmartcardError):
    code = "document_mismatch"
    description = "what the device signed does not match the document of this request"


class PreparedForAnotherDevice(SmartcardError):
    code = "prepared_for_another_device"
    status = 409
    description = "the request was prepared for another device: fetch the pending requests again"


class NotForSigning(SmartcardError):
    code = "certificate_not_for_signing"
    status = 403
    description = "the device certificate does not allow signing (contentCommitment): renew it first"


class BadSignature(SmartcardError):
    code = "invalid_signature"
    description = "the signature does not verify with the device certificate"


class Gone(SmartcardError):
    code = "gone"
    status = 410
    description = "the signed document was already fetched or has expired"


@dataclass(frozen=True)
class PendingSignature:
    """What the device shows and signs."""

    id: str
    service_name: str
    title: str
    pages: int
    document_sha256: str
    reason: str | None
    level: str
    to_be_signed: str  # base64url SHA-256 of the DER signed attributes
    signed_attributes: str  # base64url DER, for a device that checks what it signs
    expires_at: dt.datetime


@dataclass(frozen=True)
class Answer:
    id: str
    account_id: str
    device_id: str
    client_id: str
    decision: str  # signed | denied
    document_sha256: str


Finisher = Callable[[Prepared, bytes], bytes]
"""(prepared, device signature) -> signed PDF at ``prepared.level`` (``signing.finish``)."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: object, what: str) -> bytes:
    if not isinstance(text, str) or not 0 < len(text) <= 400:
        raise InvalidRequest(f"{what} is not a base64url string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error) as exc:
        raise InvalidRequest(f"{what} is not base64url") from exc


def signing_devices(session: Session, account_id: str, now: dt.datetime) -> list[Device]:
    """The citizen's devices that may sign: active, certificate current, at least substantial."""
    return list(
        session.execute(
            select(Device).where(
                Device.account_id == account_id,
                Device.revoked_at.is_(None),
                Device.cert_not_after > now,
                Device.max_level >= int(Level.SUBSTANTIAL),
            )
        ).scalars()
    )


def create(
    session: Session,
    *,
    account_id: str,
    client_id: str,
    service_name: str,
    data: bytes,
    level: str,
    reason: str | None,
    now: dt.datetime,
    max_size: int = DEFAULT_MAX_SIZE,
) -> CitizenSignatureRequest:
    """A new pending request; raises :class:`signing.DocumentError` or :class:`NoSigningDevice`."""
    try:
        level = PadesLevel.parse(level).value
    except UnknownLevel as exc:
        raise InvalidRequest(f"level must be one of {', '.join(PadesLevel)}") from exc
    if reason is not None and (not reason.isprintable() or len(reason) > MAX_REASON):
        raise InvalidRequest(f"reason: at most {MAX_REASON} printable characters")
    facts = inspect(data, max_size=max_size)
    waiting = session.execute(
        select(func.count())
        .select_from(CitizenSignatureRequest)
        .where(
            CitizenSignatureRequest.account_id == account_id,
            CitizenSignatureRequest.state == PENDING,
            CitizenSignatureRequest.expires_at > now,
        )
    ).scalar_one()
    if waiting >= MAX_PENDING:
        raise TooManyPending(f"{waiting} pending for account {account_id}")
    if not signing_devices(session, account_id, now):
        # a removed device or one only at low cannot sign (policies.assess_device)
        raise NoSigningDevice(f"account {account_id} has no active device at substantial")
    row = CitizenSignatureRequest(
        account_id=account_id,
        client_id=client_id,
        service_name=service_name[:200],
        title=_shown(facts.title or ""),
        pages=facts.page_count,
        document_sha256=facts.sha256,
        size=facts.size,
        level=level,
        reason=reason,
        document=data,
        state=PENDING,
        created_at=now,
        expires_at=now + TTL,
    )
    session.add(row)
    session.flush()
    return row


def _shown(title: str) -> str:
    """The title as the device shows it: control characters would let a title fake a second
    line on the device's screen."""
    return "".join(ch if ch.isprintable() else " " for ch in title).strip()[:200]


def signer_name(certificate: x509.Certificate) -> str:
    """The signature's /Name (ISO 32000-1 §12.8.1): a device certificate carries no personal
    data, only its device URN (pki.profiles.device_subject); cityid links the device to the
    citizen's account, and the service knows the citizen from the login."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return certificate.subject.rfc4514_string()
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else certificate.subject.rfc4514_string()


def _prepared(row: CitizenSignatureRequest) -> Prepared:
    assert row.prepared_state is not None
    return Prepared.from_bytes(row.prepared_state)


def pending_for(
    session: Session,
    *,
    device_id: str,
    account_id: str,
    certificate_der: bytes,
    chain: list[x509.Certificate],
    now: dt.datetime,
) -> list[PendingSignature]:
    """The citizen's pending requests, each prepared for this device's certificate."""
    certificate = x509.load_der_x509_certificate(certificate_der)
    fingerprint = hashlib.sha256(certificate_der).hexdigest()
    rows = session.execute(
        select(CitizenSignatureRequest)
        .where(
            CitizenSignatureRequest.account_id == account_id,
            CitizenSignatureRequest.state == PENDING,
            CitizenSignatureRequest.expires_at > now,
        )
        .order_by(CitizenSignatureRequest.created_at)
    ).scalars()
    out: list[PendingSignature] = []
    for row in rows:
        if (
            row.prepared_device_id != device_id
            or row.prepared_cert_sha256 != fingerprint  # a renewed certificate: prepare again
            or row.prepared_state is None
        ):
            assert row.document is not None
            prepared = prepare(
                row.document,
                certificate,
                chain,
                level=PadesLevel(row.level),
                reason=row.reason,
                name=signer_name(certificate),
                field_name=f"Signature-{row.id}",
            )
            row.prepared_device_id = device_id
            row.prepared_cert_sha256 = fingerprint
            row.prepared_state = prepared.to_bytes()
        else:
            prepared = _prepared(row)
        out.append(
            PendingSignature(
                id=row.id,
                service_name=row.service_name,
                title=row.title,
                pages=row.pages,
                document_sha256=row.document_sha256,
                reason=row.reason,
                level=row.level,
                to_be_signed=_b64url(prepared.to_be_signed_sha256),
                signed_attributes=_b64url(prepared.to_be_signed),
                expires_at=row.expires_at,
            )
        )
    session.flush()
    return out


def _same(sent: object, stored: str) -> bool:
    return isinstance(sent, str) and hmac.compare_digest(sent.encode(), stored.encode())


def answer(
    session: Session,
    ca: pki.CertificateAuthority,
    settings: SmartcardSettings,
    token: str,
    *,
    url: str,
    now: dt.datetime,
    finisher: Finisher,
) -> Answer:
    """Check a device's signed answer and, for ``approve``, finish the signature."""
    verified = proof.verify(session, ca, token, method="POST", url=url, now=now, window=settings.proof_window)
    claims = verified.claims
    decision = claims.get("decision")
    if decision not in ("approve", "deny"):
        raise InvalidRequest("decision must be approve or deny")
    request_id = claims.get("request")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= 40:
        raise InvalidRequest("request (the signature request id) is required")
    row = session.get(CitizenSignatureRequest, request_id)
    # device ownership: a device of citizen A never answers for citizen B (not even "exists")
    if row is None or not hmac.compare_digest(row.account_id, verified.account_id):
        raise UnknownRequest(f"request {request_id[:40]} unknown to account {verified.account_id}")
    if row.state != PENDING or row.expires_at <= now:
        raise RequestAnswered(f"request is {row.state}, expires {row.expires_at.isoformat()}")
    # what you see is what you sign: the device signed what it showed, and it is this document
    if not (
        _same(claims.get("document_sha256"), row.document_sha256)
        and _same(claims.get("title"), row.title)
        and _same(claims.get("service_name"), row.service_name)
        and claims.get("pages") == row.pages
    ):
        raise DocumentMismatch("document hash, title, pages or service name differ from the request")
    state = DENIED
    signed: bytes | None = None
    if decision == "approve":
        level = Level(verified.device_max_level) if verified.device_max_level else None
        if level is None or level < Level.SUBSTANTIAL:
            # policies.assess_device: a software key never reaches more than low
            raise InsufficientDeviceLevel(f"device max level {level} below substantial")
        if (
            row.prepared_device_id != verified.device_id
            or row.prepared_cert_sha256 != hashlib.sha256(verified.certificate_der).hexdigest()
            or row.prepared_state is None
        ):
            raise PreparedForAnotherDevice(
                f"prepared for {row.prepared_device_id}/{row.prepared_cert_sha256}"
            )
        prepared = _prepared(row)
        if not hmac.compare_digest(
            _b64url_decode(claims.get("to_be_signed"), "to_be_signed"), prepared.to_be_signed_sha256
        ):
            raise DocumentMismatch("to_be_signed is not the digest of this request's signed attributes")
        certificate = x509.load_der_x509_certificate(verified.certificate_der)
        _may_sign(certificate)
        signature = _b64url_decode(claims.get("signature"), "signature")
        try:  # RFC 5652 §5.4: over the DER signed attributes, with the certificate's key
            check_signature(prepared, signature)
        except SignatureMismatch as exc:
            raise BadSignature(str(exc)) from exc
        signed = finisher(prepared, signature)
        state = SIGNED
    # single use: of two concurrent answers only one finds the request pending
    won = session.execute(
        update(CitizenSignatureRequest)
        .where(CitizenSignatureRequest.id == row.id, CitizenSignatureRequest.state == PENDING)
        .values(
            state=state,
            answered_at=now,
            device_id=verified.device_id,
            signed_pdf=signed,
            document=None,
            prepared_state=None,
        )
        .execution_options(synchronize_session=False)
    )
    if won.rowcount != 1:  # type: ignore[attr-defined]
        raise RequestAnswered("answered concurrently")
    proof.touch(session, verified.device_id, now)
    return Answer(row.id, row.account_id, verified.device_id, row.client_id, state, row.document_sha256)


def _may_sign(certificate: x509.Certificate) -> None:
    """RFC 5280 §4.2.1.3: a signature meant to commit to content needs contentCommitment;
    a device certificate issued before the profile gained it must be renewed first."""
    try:
        ku = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise NotForSigning("no keyUsage") from exc
    if not (ku.digital_signature and ku.content_commitment):
        raise NotForSigning("keyUsage lacks contentCommitment")


def view(
    session: Session, request_id: str, *, client_id: str, account_id: str, now: dt.datetime
) -> CitizenSignatureRequest:
    """A service's own request (same client, same citizen); others are "not found"."""
    row = session.get(CitizenSignatureRequest, request_id[:40]) if request_id else None
    if (
        row is None
        or not hmac.compare_digest(row.client_id, client_id)
        or not hmac.compare_digest(row.account_id, account_id)
    ):
        raise UnknownRequest("not this service's request for this citizen")
    if row.state in (PENDING, SIGNED) and row.expires_at <= now:
        raise Gone("expired")
    return row


def take_signed(session: Session, row: CitizenSignatureRequest, now: dt.datetime) -> bytes:
    """The signed PDF, once: afterwards nothing of the document is kept."""
    won = session.execute(
        update(CitizenSignatureRequest)
        .where(CitizenSignatureRequest.id == row.id, CitizenSignatureRequest.state == SIGNED)
        .values(state=FETCHED, signed_pdf=None, document=None, prepared_state=None)
        .execution_options(synchronize_session=False)
    )
    if won.rowcount != 1 or row.signed_pdf is None:  # type: ignore[attr-defined]
        raise Gone("already fetched")
    return row.signed_pdf


def purge(session: Session, now: dt.datetime) -> int:
    """Requests older than their 15 minutes go whole: the document, any result, the row."""
    res = session.execute(
        delete(CitizenSignatureRequest)
        .where(CitizenSignatureRequest.expires_at <= now)
        .execution_options(synchronize_session=False)
    )
    return int(res.rowcount or 0)  # type: ignore[attr-defined]
