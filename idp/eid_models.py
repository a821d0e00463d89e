"""Tables of the eID integration (Alembic branch ``eid``).

Pseudonyms are kept as keyed digests only (a blind index: linking works, reading the table
does not reveal them); attribute values are sealed like all personal data (ARCHITECTURE.md).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from db import Base, new_id, utcnow


class EidLink(Base):
    """An account's linked eID. One eID per account, one account per eID (the pseudonym)."""

    __tablename__ = "eid_link"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("idp_account.id", ondelete="CASCADE"), unique=True)
    pseudonym_digest: Mapped[str] = mapped_column(String(64), unique=True)
    connector: Mapped[str] = mapped_column(String(20))  # simulator | saml | oidc
    issuer: Mapped[str] = mapped_column(String(300))
    level: Mapped[int]  # policies.Level the eID was last used at
    simulation: Mapped[bool] = mapped_column(default=False)
    linked_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class EidVerifiedAttribute(Base):
    """An attribute the eID service vouched for: value (sealed), source, level, time."""

    __tablename__ = "eid_attribute"
    __table_args__ = (UniqueConstraint("link_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_id)
    link_id: Mapped[str] = mapped_column(ForeignKey("eid_link.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    value_enc: Mapped[bytes] = mapped_column(LargeBinary)
    source: Mapped[str] = mapped_column(String(300))
    level: Mapped[int]
    verified_at: Mapped[dt.datetime]


class EidSeenAssertion(Base):
    """SAML assertion IDs already accepted (SAML Profiles §4.1.4.5), kept until they expire."""

    __tablename__ = "eid_seen_assertion"

    id_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class EidPending(Base):
    """An eID authentication under way: the connector's secrets (PKCE verifier, nonce, SAML
    request ID) sealed server-side, bound to the browser session that started it; after the
    callback, the sealed result waiting for that browser to come back."""

    __tablename__ = "eid_pending"

    state_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_digest: Mapped[str] = mapped_column(
        ForeignKey("idp_session.id_digest", ondelete="CASCADE"), index=True
    )
    connector: Mapped[str] = mapped_column(String(20))
    pending_enc: Mapped[bytes] = mapped_column(LargeBinary)
    result_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    client_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    note: Mapped[str | None] = mapped_column(Text)
