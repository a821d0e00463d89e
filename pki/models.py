"""The CA's tables: authorities (root, issuing, OCSP signer), every certificate, CRL state, OCSP cache.

Every certificate the CA signs has a row in ``ca_certificate`` before its signature exists
(status ``pending``); see ``pki/README.md`` for why.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column

from db import Base

# Certificate status values (column ``ca_certificate.status``).
PENDING = "pending"  # serial reserved and the certificate about to be signed (or signed and lost)
ISSUED = "issued"
REVOKED = "revoked"


class CaAuthority(Base):
    """A key the CA signs with: ``root``, ``issuing`` or ``ocsp-signer``."""

    __tablename__ = "ca_authority"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("ca_authority.id"), nullable=True)
    key_ref: Mapped[str] = mapped_column(String(200))
    serial: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(Text)
    not_before: Mapped[dt.datetime]
    not_after: Mapped[dt.datetime]
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime]
    # issuing CA: an OCSP signer rotation under way since (one worker rotates; pki.setup)
    rotation_claimed_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class CaCertificate(Base):
    """Every certificate an issuing CA signed (or was about to sign)."""

    __tablename__ = "ca_certificate"

    serial: Mapped[str] = mapped_column(String(40), primary_key=True)  # lower-case hex, 40 digits
    issuer_id: Mapped[str] = mapped_column(ForeignKey("ca_authority.id"))
    profile: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(Text, index=True)  # e.g. urn:cityid:device:<id>
    spki_sha256: Mapped[str] = mapped_column(String(64), index=True)
    not_before: Mapped[dt.datetime]
    not_after: Mapped[dt.datetime]
    status: Mapped[str] = mapped_column(String(10))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    revocation_reason: Mapped[int | None] = mapped_column(Integer, nullable=True)
    shard: Mapped[int] = mapped_column(Integer)
    fingerprint_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    der: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[dt.datetime]

    __table_args__ = (Index("ix_ca_certificate_issuer_status_shard", "issuer_id", "status", "shard"),)


class CaCrlState(Base):
    """The latest CRL of one scope: ``full``, a shard number as text, or ``root`` (the ARL)."""

    __tablename__ = "ca_crl_state"

    issuer_id: Mapped[str] = mapped_column(ForeignKey("ca_authority.id"), primary_key=True)
    scope: Mapped[str] = mapped_column(String(10), primary_key=True)
    crl_number: Mapped[int] = mapped_column(Integer)
    this_update: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    next_update: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    stale: Mapped[bool] = mapped_column(Boolean, default=True)
    der: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class CaOcspCache(Base):
    """A pre-signed OCSP response (without nonce) for one certificate and CertID hash."""

    __tablename__ = "ca_ocsp_cache"

    issuer_id: Mapped[str] = mapped_column(ForeignKey("ca_authority.id"), primary_key=True)
    serial: Mapped[str] = mapped_column(String(40), primary_key=True)
    hash_alg: Mapped[str] = mapped_column(String(10), primary_key=True)
    this_update: Mapped[dt.datetime]
    refresh_after: Mapped[dt.datetime]
    der: Mapped[bytes] = mapped_column(LargeBinary)


CERTIFICATES = cast(Table, CaCertificate.__table__)
OCSP_CACHE = cast(Table, CaOcspCache.__table__)
