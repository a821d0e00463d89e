"""Citizen signature requests (Alembic branch ``signing_citizen``).

``sg_citizen_request``: a service's PDF waiting for the citizen's device, the prepared signature
for the device that fetched it, and the signed result until the service fetched it. The
document and the results are deleted once fetched, and the whole row 15 minutes after it was
made (``purge``); the audit log keeps the document's SHA-256, never the document.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from db import Base, new_id, utcnow

# states
PENDING = "pending"  # waiting for the device
SIGNED = "signed"  # signed PDF ready for the service
DENIED = "denied"  # the citizen declined on the device
FETCHED = "fetched"  # the service took the signed PDF; nothing of the document is kept


def request_id() -> str:
    return new_id(16)  # 128 random bits


class CitizenSignatureRequest(Base):
    __tablename__ = "sg_citizen_request"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=request_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("idp_account.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    service_name: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(200))
    pages: Mapped[int] = mapped_column(Integer)
    document_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(5))  # B-B | B-T | B-LT
    reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    document: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    state: Mapped[str] = mapped_column(String(10), default=PENDING)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    # the prepared first half, for the one device (and certificate) that fetched it last
    prepared_device_id: Mapped[str | None] = mapped_column(
        ForeignKey("sc_device.id", ondelete="SET NULL"), nullable=True, index=True
    )
    prepared_cert_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)  # its certificate
    prepared_state: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # Prepared.to_bytes
    # the answer
    device_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    answered_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    signed_pdf: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
