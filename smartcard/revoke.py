"""Removing a device: its certificate is revoked ``cessationOfOperation`` at once (OCSP and the
shard CRL follow in the same commit, see ``pki.revoke``), and the caller learns what was bound
to it (token families, DPoP key, browser sessions it stepped up) so those end too.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

import pki
from smartcard.errors import UnknownDevice
from smartcard.models import APPROVED, AUTH, USED, Challenge, Device, DeviceGrant

REASON = "cessationOfOperation"  # RFC 5280 §5.3.1


@dataclass(frozen=True)
class RevokedDevice:
    device_id: str
    account_id: str
    serial: str
    dpop_jkt: str | None
    grant_ids: tuple[str, ...]
    session_sids: tuple[str, ...]
    already: bool


def revoke_device(
    session: Session,
    ca: pki.CertificateAuthority,
    device_id: str,
    *,
    actor: str,
    reason: str,
    now: dt.datetime,
    owner: str | None = None,
    end_bindings: Callable[[Session, RevokedDevice], None] | None = None,
    commit: bool = True,
) -> RevokedDevice:
    """Revoke one device (``owner``: only if it is this account's). Commits ``session`` unless
    ``commit`` is False (see ``pki.revoke``)."""
    device = session.get(Device, device_id) if isinstance(device_id, str) and len(device_id) <= 40 else None
    if device is None or (owner is not None and not hmac.compare_digest(device.account_id, owner)):
        raise UnknownDevice(f"no device {str(device_id)[:40]!r} for {owner or 'admin'}")
    already = device.revoked_at is not None
    grants = tuple(
        session.execute(select(DeviceGrant.grant_id).where(DeviceGrant.device_id == device.id)).scalars()
    )
    sids = tuple(
        sid
        for sid in session.execute(
            select(Challenge.session_sid).where(
                Challenge.device_id == device.id,
                Challenge.purpose == AUTH,
                Challenge.state.in_((APPROVED, USED)),
            )
        ).scalars()
        if sid
    )
    revoked = RevokedDevice(
        device.id, device.account_id, device.cert_serial, device.dpop_jkt, grants, sids, already
    )
    if not already:
        device.revoked_at = now
        device.revoked_reason = reason[:100]
    session.flush()
    if end_bindings is not None:
        end_bindings(session, revoked)
    pki.revoke(session, ca, device.cert_serial, REASON, actor=actor, now=now, commit=commit)
    return revoked


def revoke_account_devices(
    session: Session,
    ca: pki.CertificateAuthority,
    account_id: str,
    *,
    actor: str,
    reason: str,
    now: dt.datetime,
    end_bindings: Callable[[Session, RevokedDevice], None] | None = None,
    commit: bool = True,
) -> list[RevokedDevice]:
    ids = list(
        session.execute(
            select(Device.id).where(Device.account_id == account_id, Device.revoked_at.is_(None))
        ).scalars()
    )
    return [
        revoke_device(
            session, ca, i, actor=actor, reason=reason, now=now, end_bindings=end_bindings, commit=commit
        )
        for i in ids
    ]
