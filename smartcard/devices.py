"""Reading and renaming devices; the account facts ``policies`` needs."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from policies import DeviceFacts, Level
from smartcard.enroll import clean_name
from smartcard.errors import UnknownDevice
from smartcard.models import Device, DeviceGrant


@dataclass(frozen=True)
class DeviceInfo:
    id: str
    account_id: str
    name: str
    type: str
    security_level: str
    max_level: Level | None
    assessment: str
    cert_serial: str
    cert_fingerprint: str
    cert_not_after: dt.datetime
    enrolled_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None
    revoked_reason: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_json(self) -> dict[str, Any]:
        def iso(v: dt.datetime | None) -> str | None:
            return v.isoformat() if v else None

        return {
            "id": self.id,
            "account_id": self.account_id,
            "name": self.name,
            "type": self.type,
            "security_level": self.security_level,
            "max_level": self.max_level.label if self.max_level else None,
            "assessment": self.assessment,
            "certificate_serial": self.cert_serial,
            "certificate_sha256": self.cert_fingerprint,
            "certificate_not_after": iso(self.cert_not_after),
            "enrolled_at": iso(self.enrolled_at),
            "last_used_at": iso(self.last_used_at),
            "revoked_at": iso(self.revoked_at),
            "revoked_reason": self.revoked_reason,
        }


def info(row: Device) -> DeviceInfo:
    return DeviceInfo(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        type=row.type,
        security_level=row.security_level,
        max_level=Level(row.max_level) if row.max_level else None,
        assessment=row.assessment,
        cert_serial=row.cert_serial,
        cert_fingerprint=row.cert_fingerprint,
        cert_not_after=row.cert_not_after,
        enrolled_at=row.enrolled_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        revoked_reason=row.revoked_reason,
    )


def list_devices(
    session: Session, *, account_id: str | None = None, include_revoked: bool = False
) -> list[DeviceInfo]:
    q = select(Device).order_by(Device.enrolled_at)
    if account_id is not None:
        q = q.where(Device.account_id == account_id)
    if not include_revoked:
        q = q.where(Device.revoked_at.is_(None))
    return [info(r) for r in session.execute(q).scalars()]


def get(session: Session, device_id: str) -> DeviceInfo:
    row = session.get(Device, device_id) if len(device_id) <= 40 else None
    if row is None:
        raise UnknownDevice(f"no device {device_id[:40]!r}")
    return info(row)


def rename(session: Session, *, account_id: str, device_id: str, name: str) -> DeviceInfo:
    row = session.get(Device, device_id) if len(device_id) <= 40 else None
    if row is None or row.account_id != account_id or row.revoked_at is not None:
        raise UnknownDevice(f"no device {device_id[:40]!r} for this account")
    row.name = clean_name(name)
    return info(row)


def account_device_facts(session: Session, account_id: str, now: dt.datetime) -> tuple[DeviceFacts, ...]:
    """Active devices: not revoked and with an unexpired certificate."""
    rows = session.execute(
        select(Device.id, Device.max_level).where(
            Device.account_id == account_id, Device.revoked_at.is_(None), Device.cert_not_after > now
        )
    ).all()
    return tuple(DeviceFacts(device_id=i, max_level=Level(m) if m else None) for i, m in rows)


def record_grant(session: Session, device_id: str, grant_id: str) -> None:
    if session.get(DeviceGrant, (device_id, grant_id)) is None:
        session.add(DeviceGrant(device_id=device_id, grant_id=grant_id))


def export(session: Session, account_id: str) -> dict[str, Any]:
    items = []
    for d in list_devices(session, account_id=account_id, include_revoked=True):
        row = session.get(Device, d.id)
        data = d.as_json()
        data["attestation"] = json.loads(row.attestation) if row is not None else None
        items.append(data)
    return {"devices": items}
