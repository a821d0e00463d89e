"""Tables of the WebAuthn step (Alembic branch ``webauthn``).

A credential keeps its COSE public key, signature counter and what its attestation proved
(format, AAGUID, security level, the level ``policies.assess_device`` allows). Ceremony state
(the challenge fido2's server hands out) lives server-side, bound to the browser session that
asked for it, for a few minutes and one use (WebAuthn L2 §13.4.3).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from db import Base, new_id, utcnow


class WebAuthnCredential(Base):
    """A registered public key credential (WebAuthn L2 §7.1 step 26: store it with the account)."""

    __tablename__ = "webauthn_credential"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("idp_account.id", ondelete="CASCADE"), index=True)
    # WebAuthn L2 §7.1 step 22: a credential id is registered to one account only
    credential_digest: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 hex of the id
    credential_id: Mapped[bytes] = mapped_column(LargeBinary)  # at most 1023 bytes (§5.8.3)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)  # COSE_Key, CBOR
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)  # unsigned 32-bit (§6.1)
    aaguid: Mapped[str] = mapped_column(String(32))  # hex; all zero for none / U2F
    attestation_format: Mapped[str] = mapped_column(String(20))
    attestation_trusted: Mapped[bool] = mapped_column(default=False)  # path ended at an anchor
    security_level: Mapped[str] = mapped_column(String(20))  # attestation.SecurityLevel value
    max_level: Mapped[int | None]  # policies.Level from assess_device; None: none at all
    assessment: Mapped[str] = mapped_column(String(300))  # reason code and text, for the audit
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]


class WebAuthnChallenge(Base):
    """A ceremony under way: fido2's state for one challenge, found by the challenge's digest."""

    __tablename__ = "webauthn_challenge"

    challenge_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_digest: Mapped[str] = mapped_column(
        ForeignKey("idp_session.id_digest", ondelete="CASCADE"), index=True
    )
    account_id: Mapped[str] = mapped_column(ForeignKey("idp_account.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(12))  # register | authenticate
    state: Mapped[str] = mapped_column(Text)  # fido2 server state, JSON
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
