"""The virtual smartcard's tables (Alembic branch ``smartcard``).

``sc_device``: an enrolled device key, what its attestation proved, its current certificate.
``sc_challenge``: single-use challenges (enrolment, renewal, PKI-2FA) with their binding data.
``sc_device_grant``: token families a device's app obtained, so removing the device ends them.
``sc_seen_proof``: device proof ``jti`` values already accepted (replay window).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from db import Base, new_id, utcnow

# Challenge purposes.
ENROL = "enroll"
AUTH = "auth"
RENEW = "renew"

# PKI-2FA challenge states.
PENDING = "pending"
APPROVED = "approved"
DENIED = "denied"
USED = "used"


class Device(Base):
    """A virtual smartcard: a device key certified by the CA after attestation."""

    __tablename__ = "sc_device"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("idp_account.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(30))  # android-key | apple-appattest | software
    security_level: Mapped[str] = mapped_column(String(20))  # attestation SecurityLevel value
    max_level: Mapped[int | None] = mapped_column(Integer, nullable=True)  # policies.Level
    assessment: Mapped[str] = mapped_column(String(60))  # policies Reason code
    attestation: Mapped[str] = mapped_column(Text, default="{}")  # JSON summary of the result
    spki_sha256: Mapped[str] = mapped_column(String(64), index=True)
    cert_serial: Mapped[str] = mapped_column(String(40))
    cert_fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    cert_not_after: Mapped[dt.datetime]
    dpop_jkt: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    enrolled_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    renewed_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(100), nullable=True)


class Challenge(Base):
    """A single-use challenge. Only the SHA-256 of its value is stored (``id``)."""

    __tablename__ = "sc_challenge"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex SHA-256 of the value
    public_id: Mapped[str] = mapped_column(String(40), unique=True, default=new_id)
    purpose: Mapped[str] = mapped_column(String(10))  # enroll | auth | renew
    account_id: Mapped[str] = mapped_column(ForeignKey("idp_account.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[str | None] = mapped_column(
        ForeignKey("sc_device.id", ondelete="CASCADE"), nullable=True, index=True
    )  # renew: the device; auth: the device that answered
    value: Mapped[str | None] = mapped_column(String(64), nullable=True)  # auth: shown to devices
    binding_code: Mapped[str | None] = mapped_column(String(12), nullable=True)
    service_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    amount: Mapped[str | None] = mapped_column(String(60), nullable=True)
    level: Mapped[int | None] = mapped_column(Integer, nullable=True)  # auth: level asked for
    session_sid: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(10), default=PENDING)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    answered_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class DeviceGrant(Base):
    """A token family (``idp_grant``) a device's app obtained."""

    __tablename__ = "sc_device_grant"

    device_id: Mapped[str] = mapped_column(ForeignKey("sc_device.id", ondelete="CASCADE"), primary_key=True)
    grant_id: Mapped[str] = mapped_column(
        ForeignKey("idp_grant.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class SeenProof(Base):
    """A device proof already accepted, kept until it could no longer be replayed."""

    __tablename__ = "sc_seen_proof"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
