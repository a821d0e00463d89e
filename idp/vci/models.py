"""Tables of the credential issuer: library cards, status list entries, offers, access tokens."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from db import Base, new_id, utcnow


class LibraryCard(Base):
    """A citizen's library card (granted by the library, e.g. ``cityid credentials grant``).
    The holder's name is sealed (personal data at rest)."""

    __tablename__ = "vci_library_card"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("idp_account.id", ondelete="CASCADE"), unique=True)
    number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    name_enc: Mapped[bytes] = mapped_column(LargeBinary)  # JSON {given_name, family_name}
    library: Mapped[str] = mapped_column(String(200))
    valid_until: Mapped[dt.date]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]


class StatusEntry(Base):
    """One issued credential's index in the Token Status List. Never deleted: a freed index
    would read VALID again. ``card_id`` is emptied when the account goes; the bit stays set."""

    __tablename__ = "vci_status_entry"

    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    card_id: Mapped[str | None] = mapped_column(
        ForeignKey("vci_library_card.id", ondelete="SET NULL"), index=True
    )
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked: Mapped[bool] = mapped_column(default=False)


class CredentialOffer(Base):
    """A pre-authorized code (OpenID4VCI 1.0 §4.1.1) with its transaction code's digest."""

    __tablename__ = "vci_offer"

    code_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("idp_account.id", ondelete="CASCADE"), index=True)
    tx_code_digest: Mapped[str] = mapped_column(String(64))
    failures: Mapped[int] = mapped_column(default=0)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class CredentialAccess(Base):
    """An access token of the pre-authorized code flow (opaque; its digest only)."""

    __tablename__ = "vci_access"

    token_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("idp_account.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[dt.datetime]
