"""Tables of the OpenID Connect provider. Secrets are stored as keyed digests only."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, false, text
from sqlalchemy.orm import Mapped, mapped_column

from db import Base, new_id, utcnow


class Account(Base):
    __tablename__ = "idp_account"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_id)
    # Personal data is encrypted at rest; found through a keyed blind index (ARCHITECTURE).
    email_enc: Mapped[bytes] = mapped_column(LargeBinary)
    email_index: Mapped[str] = mapped_column(String(64), unique=True)
    email_verified_at: Mapped[dt.datetime | None]
    password_hash: Mapped[str | None] = mapped_column(String(200))
    disabled: Mapped[bool] = mapped_column(default=False)
    locale: Mapped[str] = mapped_column(String(8), default="de")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    password_changed_at: Mapped[dt.datetime | None]
    # Registered on /register (not by an administrator): purged if never confirmed (idp.privacy)
    self_registered: Mapped[bool] = mapped_column(default=False, server_default=false())
    # staff roles, space-separated (`cityid user role add`): "analyst" and "admin" see /insights
    roles: Mapped[str] = mapped_column(String(100), default="", server_default="")


class Client(Base):
    __tablename__ = "idp_client"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret_digest: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    redirect_uris: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    post_logout_redirect_uris: Mapped[str] = mapped_column(Text, default="[]")
    grant_types: Mapped[str] = mapped_column(Text, default='["authorization_code"]')
    scope: Mapped[str] = mapped_column(Text, default="openid profile email")
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(40))
    jwks: Mapped[str | None] = mapped_column(Text)  # for private_key_jwt
    backchannel_logout_uri: Mapped[str | None] = mapped_column(Text)
    # RFC 9126 §6 require_pushed_authorization_requests: authorization requests only by PAR
    require_par: Mapped[bool] = mapped_column(default=False, server_default=false())
    # RFC 9700 §2.1.1: PKCE (S256) for every client; a legacy confidential client may be let off
    allow_missing_pkce: Mapped[bool] = mapped_column(default=False, server_default=false())
    # "" (cityid's defaults) or "fapi2" (FAPI 2.0 Security Profile, idp.oauth.fapi2)
    profile: Mapped[str] = mapped_column(String(20), default="", server_default="")
    min_level: Mapped[str | None] = mapped_column(String(80))
    subject_type: Mapped[str] = mapped_column(String(10), default="pairwise")
    id_token_alg: Mapped[str] = mapped_column(String(10), default="ES256")
    logo_uri: Mapped[str | None] = mapped_column(Text)
    scope_levels: Mapped[str] = mapped_column(Text, default="{}")  # JSON {scope: acr}
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    disabled: Mapped[bool] = mapped_column(default=False)


class LoginSession(Base):
    """A browser session at the IdP. The cookie holds a random token; we store its digest."""

    __tablename__ = "idp_session"

    id_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    sid: Mapped[str] = mapped_column(String(40), unique=True, default=new_id)  # OIDC `sid`
    account_id: Mapped[str | None] = mapped_column(
        ForeignKey("idp_account.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    factors: Mapped[str] = mapped_column(Text, default="{}")  # JSON {amr factor: unix time}
    csrf_secret: Mapped[str] = mapped_column(String(64))
    locale: Mapped[str | None] = mapped_column(String(8))
    pending: Mapped[str | None] = mapped_column(Text)  # JSON: the authorization request waiting


class Grant(Base):
    """One authorization (a token family): codes, refresh and access tokens issued from it."""

    __tablename__ = "idp_grant"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_id)
    client_id: Mapped[str] = mapped_column(ForeignKey("idp_client.client_id", ondelete="CASCADE"))
    account_id: Mapped[str | None] = mapped_column(
        ForeignKey("idp_account.id", ondelete="CASCADE"), index=True
    )
    sid: Mapped[str | None] = mapped_column(String(40), index=True)
    scope: Mapped[str] = mapped_column(Text)
    auth_time: Mapped[int | None]
    acr: Mapped[str | None] = mapped_column(String(80))
    amr: Mapped[str] = mapped_column(Text, default="[]")
    cnf_jkt: Mapped[str | None] = mapped_column(String(64))  # RFC 9449 §5: DPoP key (public clients)
    cnf_x5t: Mapped[str | None] = mapped_column(String(64))  # RFC 8705 §4: device certificate (same)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(100))


class AuthorizationCode(Base):
    __tablename__ = "idp_code"

    code_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("idp_grant.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    nonce: Mapped[str | None] = mapped_column(Text)
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    code_challenge_method: Mapped[str | None] = mapped_column(String(10))
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class RefreshToken(Base):
    __tablename__ = "idp_refresh_token"

    token_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("idp_grant.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]  # rotated: a second use is a replay
    # the token answer that rotated it (new refresh and access token), sealed with
    # InstanceKeys.token_answer: the same client retrying within refresh_token_grace_seconds gets it
    # again instead of losing the grant; cleared once the successor is rotated or the grant revoked
    answer_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)

    # at most one row of a grant keeps an answer: a rotation clears its grant's others through
    # this index, whatever the number of tokens the grant has rotated through
    __table_args__ = (
        Index(
            "ix_idp_refresh_token_answer",
            "grant_id",
            sqlite_where=text("answer_sealed IS NOT NULL"),
            postgresql_where=text("answer_sealed IS NOT NULL"),
        ),
    )


class RevokedAccessToken(Base):
    """JWT access tokens are stateless; a revoked one is remembered until it expires."""

    __tablename__ = "idp_revoked_jti"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class Consent(Base):
    __tablename__ = "idp_consent"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("idp_account.id", ondelete="CASCADE"), primary_key=True
    )
    client_id: Mapped[str] = mapped_column(
        ForeignKey("idp_client.client_id", ondelete="CASCADE"), primary_key=True
    )
    scope: Mapped[str] = mapped_column(Text)
    granted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class EmailToken(Base):
    """Single-use, expiring links: e-mail verification, password reset, change of address."""

    __tablename__ = "idp_email_token"

    token_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("idp_account.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(20))
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
    # change of address: the new address, encrypted at rest like every address
    new_email_enc: Mapped[bytes | None] = mapped_column(LargeBinary)


class MailOutbox(Base):
    """E-mails to send: written in the transaction that issues their link, sent after it commits.

    The recipient and the message (which carries a one-time link) are encrypted at rest; a row is
    deleted once the mail server has taken the message, or after the last attempt.
    """

    __tablename__ = "idp_mail_outbox"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_id)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    recipient_enc: Mapped[bytes] = mapped_column(LargeBinary)
    message_enc: Mapped[bytes] = mapped_column(LargeBinary)
    last_error: Mapped[str] = mapped_column(Text, default="")
    # the account the mail is about (none for a mail to an address only): erasure removes it
    account_id: Mapped[str | None] = mapped_column(String(40), index=True)


class SigningKey(Base):
    """Token-signing keys, private part encrypted at rest."""

    __tablename__ = "idp_signing_key"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(10))
    public_jwk: Mapped[str] = mapped_column(Text)
    private_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    active_from: Mapped[dt.datetime]  # published before it signs
    retired_at: Mapped[dt.datetime | None]  # stops signing
    expires_at: Mapped[dt.datetime | None]  # leaves the JWKS when its tokens have expired


class LogoutOutbox(Base):
    """Back-channel logout tokens waiting for delivery; survives process death."""

    __tablename__ = "idp_logout_outbox"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_id)
    client_id: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    logout_token: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime]
    delivered_at: Mapped[dt.datetime | None]
    failed_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_idp_logout_outbox_due", "delivered_at", "next_attempt_at"),)


class SeenJti(Base):
    """Replay cache for client assertions (RFC 7523 §3 item 7) and similar one-time JWTs."""

    __tablename__ = "idp_seen_jti"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class LoginThrottle(Base):
    """Consecutive failed password logins per e-mail address (NIST SP 800-63B §5.2.2).

    Keyed by the e-mail's blind index whether or not an account has that address, so that the
    throttle answers alike for every address and reveals no accounts."""

    __tablename__ = "idp_login_throttle"

    email_index: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    last_failure_at: Mapped[dt.datetime]
    blocked_until: Mapped[dt.datetime | None]


class PushedRequest(Base):
    """A pushed authorization request (RFC 9126), found by the digest of its request_uri.

    The parameters are sealed (they may carry a login_hint or claims). Usable first within a
    short lifetime; then by the same authorization until a code is issued from it."""

    __tablename__ = "idp_pushed_request"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    params_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    first_used_at: Mapped[dt.datetime | None]
    consumed_at: Mapped[dt.datetime | None]
    # an authorization request the browser POSTed (OIDC Core §3.1.2.1), kept here so that its
    # parameters stay out of URLs: not pushed by an authenticated client (RFC 9126 §6 require_par)
    front_channel: Mapped[bool] = mapped_column(default=False, server_default=false())


class InstanceCheck(Base):
    """One row: keyed check values of ``secret_key`` and ``key_passphrase`` (not the secrets; an
    HMAC of a constant under a key derived from each). A command run with another cityid.toml
    would write addresses, links and keys that the instance can never read again."""

    __tablename__ = "idp_instance_check"

    id: Mapped[int] = mapped_column(primary_key=True)
    secret_check: Mapped[str] = mapped_column(String(64))
    passphrase_check: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
