"""PKI-2FA (ARCHITECTURE.md, main flow 3): a pending challenge with a binding code and the
service name (and amount, for a payment); the device signs challenge + binding data; the
browser's session takes the approval once.
"""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

import pki
from pki.models import CaCertificate
from policies import Level
from smartcard import challenges, proof, sql
from smartcard.errors import (
    AccessDenied,
    BindingMismatch,
    InsufficientDeviceLevel,
    InvalidChallenge,
    InvalidRequest,
)
from smartcard.models import APPROVED, AUTH, DENIED, PENDING, USED, Challenge, Device
from smartcard.settings import SmartcardSettings

MAX_SERVICE = 200


@dataclass(frozen=True)
class PendingLogin:
    """What the browser page shows: the same code and service name the device shows."""

    public_id: str
    binding_code: str
    service_name: str
    amount: str | None
    level: Level
    expires_at: dt.datetime
    state: str


@dataclass(frozen=True)
class PendingChallenge:
    """What a device fetches: the challenge value to sign and the binding data to show."""

    public_id: str
    challenge: str
    binding_code: str
    service_name: str
    amount: str | None
    level: Level
    expires_at: dt.datetime


@dataclass(frozen=True)
class Approval:
    public_id: str
    account_id: str
    device_id: str
    decision: str  # approved | denied
    device_max_level: Level | None


def _pending_view(row: Challenge) -> PendingLogin:
    return PendingLogin(
        public_id=row.public_id,
        binding_code=row.binding_code or "",
        service_name=row.service_name or "",
        amount=row.amount,
        level=Level(row.level or Level.SUBSTANTIAL),
        expires_at=row.expires_at,
        state=row.state,
    )


def start(
    session: Session,
    settings: SmartcardSettings,
    *,
    account_id: str,
    session_sid: str,
    service_name: str,
    amount: str | None,
    level: Level,
    now: dt.datetime,
) -> PendingLogin:
    """The browser session's live challenge (the same one after a reload), or a new one."""
    service_name = service_name[:MAX_SERVICE]
    live = session.execute(
        select(Challenge)
        .where(
            Challenge.session_sid == session_sid,
            Challenge.account_id == account_id,
            Challenge.purpose == AUTH,
            Challenge.state.in_((PENDING, APPROVED)),
            Challenge.expires_at > now,
        )
        .order_by(Challenge.created_at.desc())
    ).scalar()
    if (
        live is not None
        and live.service_name == service_name
        and live.amount == amount
        and live.level == level
    ):
        return _pending_view(live)
    if live is not None:
        # superseded (pending, or approved and not yet taken): a different request now waits
        live.state = DENIED
    _, row = challenges.create(
        session,
        purpose=AUTH,
        account_id=account_id,
        ttl=settings.auth_ttl,
        now=now,
        keep_value=True,
        binding_code=challenges.binding_code(),
        service_name=service_name,
        amount=amount,
        level=int(level),
        session_sid=session_sid,
    )
    return _pending_view(row)


def pending_for(
    session: Session, device_id: str, account_id: str, now: dt.datetime
) -> list[PendingChallenge]:
    return [
        PendingChallenge(
            public_id=row.public_id,
            challenge=row.value or "",
            binding_code=row.binding_code or "",
            service_name=row.service_name or "",
            amount=row.amount,
            level=Level(row.level or Level.SUBSTANTIAL),
            expires_at=row.expires_at,
        )
        for row in challenges.pending_auth(session, account_id, now)
    ]


def _same(sent: object, stored: str | None) -> bool:
    if stored is None:
        return sent is None
    return isinstance(sent, str) and hmac.compare_digest(sent.encode(), stored.encode())


def approve(
    session: Session,
    ca: pki.CertificateAuthority,
    settings: SmartcardSettings,
    token: str,
    *,
    url: str,
    now: dt.datetime,
) -> Approval:
    """Check a signed answer: device key + certificate (``proof.verify``), then the challenge.

    Raises on any refusal; the caller rolls back its transaction then (the challenge stays
    pending, the proof's ``jti`` unrecorded) and commits on success.
    """
    conn = sql.connection(session)  # asked once: every statement below runs on it
    verified = proof.verify(conn, ca, token, method="POST", url=url, now=now, window=settings.proof_window)
    claims = verified.claims
    decision = claims.get("decision")
    if decision not in ("approve", "deny"):
        raise InvalidRequest("decision must be approve or deny")
    state = APPROVED if decision == "approve" else DENIED
    # single use, atomically: of two concurrent answers only one finds the challenge pending.
    # A check below that fails raises, and the caller's rollback leaves it pending.
    row = challenges.answer(
        conn, str(claims.get("challenge", "")), to=state, now=now, device_id=verified.device_id
    )
    if row.purpose != AUTH:
        raise InvalidChallenge(f"challenge is for {row.purpose}")
    # device ownership: a device of citizen A never answers for citizen B
    if not hmac.compare_digest(row.account_id, verified.account_id):
        raise AccessDenied(f"device {verified.device_id} belongs to another account")
    if row.expires_at <= now:
        raise InvalidChallenge("challenge expired")
    # the signature covers challenge + binding data: what the citizen saw is what is approved
    if not (
        _same(claims.get("binding_code"), row.binding_code)
        and _same(claims.get("service_name"), row.service_name)
        and _same(claims.get("amount"), row.amount)
    ):
        raise BindingMismatch("binding code, service name or amount differ")
    device_level = Level(verified.device_max_level) if verified.device_max_level else None
    if decision == "approve" and (device_level is None or device_level < (row.level or Level.SUBSTANTIAL)):
        # policies.assess_device: a software key never reaches more than low
        raise InsufficientDeviceLevel(
            f"device max level {device_level} below {Level(row.level or Level.SUBSTANTIAL).label}"
        )
    proof.touch(conn, verified.device_id, now)
    return Approval(row.public_id, row.account_id, verified.device_id, state, device_level)


def status(
    session: Session, public_id: str, *, account_id: str, session_sid: str, now: dt.datetime
) -> PendingLogin:
    row = _own(session, public_id, account_id, session_sid)
    view = _pending_view(row)
    if row.state == PENDING and row.expires_at <= now:
        return PendingLogin(**{**view.__dict__, "state": "expired"})
    return view


def take(
    session: Session,
    public_id: str,
    *,
    account_id: str,
    session_sid: str,
    now: dt.datetime,
    service_name: str,
    amount: str | None,
    level: Level,
) -> Approval:
    """The browser takes an approval, once, for the request it is waiting for now: what the
    citizen approved on the device (service, amount, level) must be what it completes (dynamic
    linking, PSD2 RTS (EU) 2018/389 Art. 5). Returns the approving device's level."""
    row = _own(session, public_id, account_id, session_sid)
    if row.state != APPROVED:
        raise InvalidChallenge(f"challenge is {row.state}")
    if (row.service_name, row.amount, row.level) != (service_name[:MAX_SERVICE], amount, int(level)):
        raise InvalidChallenge("the approval was for another request than the one waiting now")
    if row.expires_at <= now:
        raise InvalidChallenge("challenge expired")
    device = session.get(Device, row.device_id) if row.device_id else None
    if device is None or device.revoked_at is not None:
        raise InvalidChallenge("the approving device was removed")
    certificate = session.get(CaCertificate, device.cert_serial)
    if certificate is None or certificate.status != "issued":  # e.g. revoked for key compromise
        raise InvalidChallenge("the approving device's certificate is no longer good")
    result = session.execute(
        update(Challenge)
        .where(Challenge.id == row.id, Challenge.state == APPROVED)
        .values(state=USED)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidChallenge("approval already used")
    device_level = Level(device.max_level) if device.max_level else None
    return Approval(row.public_id, row.account_id, device.id, APPROVED, device_level)


def _own(session: Session, public_id: str, account_id: str, session_sid: str) -> Challenge:
    if not isinstance(public_id, str) or not 0 < len(public_id) <= 40:
        raise InvalidChallenge("unknown challenge")
    row = session.execute(select(Challenge).where(Challenge.public_id == public_id)).scalar()
    if (
        row is None
        or row.purpose != AUTH
        or not hmac.compare_digest(row.account_id, account_id)
        or not hmac.compare_digest(row.session_sid or "", session_sid)
    ):
        raise InvalidChallenge("unknown challenge")
    return row


def rebind(session: Session, public_id: str, session_sid: str) -> None:
    """The browser session was renewed after the step (new ``sid``): remember the new one, so
    removing the device later finds the session it stepped up."""
    session.execute(
        update(Challenge)
        .where(Challenge.public_id == public_id)
        .values(session_sid=session_sid)
        .execution_options(synchronize_session=False)
    )
