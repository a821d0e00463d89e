"""A citizen's rights over their data: export (GDPR Art. 15 and 20) and erasure (Art. 17). No Flask.

Other packages hold data about an account too (devices and their certificates, eID links). They
take part through two hook lists, so that this module never imports them:

``EXPORT_HOOKS``: callables ``(session, keys, account_id) -> dict``; each returns top-level sections
of the export (e.g. ``{"devices": [...]}``), JSON-serialisable, never secrets (no private keys,
no token digests). A section name used twice is an error.

``DELETE_HOOKS``: callables ``(session, account_id) -> None``; each removes or revokes what its
package holds for the account (e.g. revoke the device certificates, drop the eID link) in the
caller's transaction, before the account row goes. A hook that raises aborts the whole erasure.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session, sessionmaker

from db import audit, transaction, utcnow
from db.audit import AuditEvent
from idp import throttle
from idp.crypto import random_token
from idp.instance import InstanceKeys
from idp.keys import KeyCache
from idp.models import (
    Account,
    AuthorizationCode,
    Client,
    Consent,
    EmailToken,
    Grant,
    LoginSession,
    LoginThrottle,
    MailOutbox,
    RefreshToken,
)
from idp.oauth import backchannel

ExportHook = Callable[[Session, InstanceKeys, str], dict[str, Any]]
DeleteHook = Callable[[Session, str], None]

EXPORT_HOOKS: list[ExportHook] = []
DELETE_HOOKS: list[DeleteHook] = []

EXPORT_FORMAT = "cityid-export/1"


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def audit_entries(
    session: Session, account_id: str, *, limit: int | None = None, leave_out: Iterable[str] = ()
) -> list[AuditEvent]:
    """Audit entries about the account (as actor or subject), newest first, without the actions
    in ``leave_out`` (left out before the limit applies)."""
    return audit.entries(session, party=account_id, leave_out=leave_out, limit=limit)


def _failed_logins(session: Session, email_index: str) -> dict[str, Any] | None:
    row = session.get(LoginThrottle, email_index)
    if row is None:
        return None
    return {
        "failures": row.failures,
        "last_failure_at": _iso(row.last_failure_at),
        "blocked_until": _iso(row.blocked_until),
    }


def export_account(
    session: Session, keys: InstanceKeys, account_id: str, *, controller: str
) -> dict[str, Any]:
    """Everything held about the account, as one JSON-serialisable document (Art. 15, Art. 20)."""
    acct = session.get(Account, account_id)
    if acct is None:
        raise LookupError("no such account")
    names = {c.client_id: c.name for c in session.execute(select(Client)).scalars()}
    consents = session.execute(select(Consent).where(Consent.account_id == account_id)).scalars()
    grants = session.execute(
        select(Grant).where(Grant.account_id == account_id).order_by(Grant.created_at)
    ).scalars()
    sessions = session.execute(
        select(LoginSession).where(LoginSession.account_id == account_id).order_by(LoginSession.created_at)
    ).scalars()
    data: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "generated_at": utcnow().isoformat(),
        "controller": controller,
        "account": {
            "id": acct.id,
            "email": keys.personal_data.open(acct.email_enc, f"email:{acct.id}").decode(),
            "email_verified_at": _iso(acct.email_verified_at),
            "locale": acct.locale,
            "created_at": _iso(acct.created_at),
            "password_changed_at": _iso(acct.password_changed_at),
            "has_password": acct.password_hash is not None,
            "disabled": acct.disabled,
            "self_registered": acct.self_registered,
        },
        # links mailed and not yet purged, a day past their end (the link itself is never stored,
        # only its digest); a change of address holds the new address until it is confirmed
        "pending_links": [
            {
                "purpose": t.purpose,
                "expires_at": _iso(t.expires_at),
                "used_at": _iso(t.used_at),
                "new_email": (
                    keys.personal_data.open(t.new_email_enc, f"{t.purpose}:{acct.id}").decode()
                    if t.new_email_enc is not None
                    else None
                ),
            }
            for t in session.execute(
                select(EmailToken).where(EmailToken.account_id == account_id).order_by(EmailToken.expires_at)
            ).scalars()
        ],
        "failed_logins": _failed_logins(session, acct.email_index),
        "mails_waiting": session.execute(
            select(func.count()).select_from(MailOutbox).where(MailOutbox.account_id == account_id)
        ).scalar_one(),
        "consents": [
            {
                "service": names.get(c.client_id, c.client_id),
                "client_id": c.client_id,
                "scope": c.scope.split(),
                "granted_at": _iso(c.granted_at),
            }
            for c in consents
        ],
        "grants": [
            {
                "id": g.id,
                "service": names.get(g.client_id, g.client_id),
                "client_id": g.client_id,
                "scope": g.scope.split(),
                "acr": g.acr,
                "amr": json.loads(g.amr or "[]"),
                "created_at": _iso(g.created_at),
                "revoked_at": _iso(g.revoked_at),
                "revoked_reason": g.revoked_reason,
            }
            for g in grants
        ],
        # The cookie value is never stored; the digest and CSRF secret are not the citizen's data.
        "sessions": [
            {
                "sid": s.sid,
                "created_at": _iso(s.created_at),
                "expires_at": _iso(s.expires_at),
                "factors": sorted(json.loads(s.factors or "{}")),
            }
            for s in sessions
        ],
        "audit": [
            {
                "at": _iso(e.at),
                "action": e.action,
                "outcome": e.outcome,
                "actor": e.actor,
                "subject": e.subject,
                "reason": e.reason,
            }
            for e in audit_entries(session, account_id)
        ],
    }
    for hook in EXPORT_HOOKS:
        for name, section in hook(session, keys, account_id).items():
            if name in data:
                raise ValueError(f"export section {name!r} given twice")
            data[name] = section
    return data


@dataclass(frozen=True)
class Erasure:
    pseudonym: str
    sessions: int
    grants: int
    logout_notices: int
    audit_entries: int


def erase_account(
    session: Session, keys: InstanceKeys, key_cache: KeyCache, *, issuer: str, account_id: str
) -> Erasure:
    """Erase an account (Art. 17) in the caller's transaction.

    Order: notify services (back-channel logout for every browser session that holds a grant),
    revoke the tokens, let other packages remove their data, pseudonymise the audit log (the hash
    chain stays verifiable, db.audit), then delete the personal rows and the account.
    """
    reason = "account deleted"
    ended = backchannel.end_sessions(
        session, key_cache, issuer=issuer, subject_key=keys.subject, account_id=account_id, reason=reason
    )
    grant_ids = list(session.execute(select(Grant.id).where(Grant.account_id == account_id)).scalars())
    if grant_ids:
        from idp.oauth.server import revoke_grant

        for gid in grant_ids:
            revoke_grant(session, gid, reason)
        session.execute(delete(AuthorizationCode).where(AuthorizationCode.grant_id.in_(grant_ids)))
        session.execute(delete(RefreshToken).where(RefreshToken.grant_id.in_(grant_ids)))
    for hook in DELETE_HOOKS:
        hook(session, account_id)
    pseudonym = f"{audit.PSEUDONYM_PREFIX}{random_token(12)}"
    entries = audit.pseudonymise(session, account_id, pseudonym)
    session.execute(delete(Grant).where(Grant.account_id == account_id))
    session.execute(delete(Consent).where(Consent.account_id == account_id))
    session.execute(delete(EmailToken).where(EmailToken.account_id == account_id))
    session.execute(delete(MailOutbox).where(MailOutbox.account_id == account_id))  # unsent mails
    session.execute(delete(LoginSession).where(LoginSession.account_id == account_id))
    # the failed-login record of the address (its keyed index): it must not outlive the account
    for index in session.execute(select(Account.email_index).where(Account.id == account_id)).scalars():
        throttle.clear(session, index)
    session.execute(delete(Account).where(Account.id == account_id))
    return Erasure(
        pseudonym=pseudonym,
        sessions=ended.sessions,
        grants=len(grant_ids),
        logout_notices=ended.notices,
        audit_entries=entries,
    )


# A self-registration whose address was never confirmed is kept this long (and while a link to
# confirm it or to choose its password is still valid), then erased: storage limitation
# (GDPR Art. 5(1)(e)); and the address is free again without anyone's help.
UNCONFIRMED_KEEP = dt.timedelta(days=7)
PURGE_BATCH = 100


def _unconfirmed_due(now: dt.datetime) -> Any:
    live_link = exists().where(EmailToken.account_id == Account.id, EmailToken.expires_at > now)
    return (
        Account.self_registered,
        Account.email_verified_at.is_(None),
        Account.created_at <= now - UNCONFIRMED_KEEP,
        ~live_link,
    )


def purge_unconfirmed(
    sessions: sessionmaker[Session], keys: InstanceKeys, key_cache: KeyCache, *, issuer: str, now: dt.datetime
) -> int:
    """Erase up to PURGE_BATCH unconfirmed self-registrations older than UNCONFIRMED_KEEP without
    a live e-mail link, each as an Art. 17 erasure; return how many. Accounts an administrator
    added unconfirmed (an invitation to choose a password) are never purged.

    One transaction per account, so a row is locked only for its own erasure: a citizen who
    registers the address again or asks for a link at that moment waits milliseconds, not for
    the batch (idp.views.auth locks the row it finds; here a row so locked is skipped)."""
    with sessions() as s:
        due = list(s.execute(select(Account.id).where(*_unconfirmed_due(now)).limit(PURGE_BATCH)).scalars())
    erased = 0
    for account_id in due:
        with transaction(sessions) as s:
            still_due = (
                select(Account.id)
                .where(Account.id == account_id, *_unconfirmed_due(now))
                .with_for_update(skip_locked=True)  # PostgreSQL; SQLite's writers take turns
            )
            if s.execute(still_due).first() is None:  # confirmed, re-registered or taken meanwhile
                continue
            result = erase_account(s, keys, key_cache, issuer=issuer, account_id=account_id)
            audit.record(
                s,
                action="account.purge",
                outcome="success",
                actor="system",
                subject=result.pseudonym,
                reason=f"address not confirmed within {UNCONFIRMED_KEEP.days} days (GDPR Art. 5(1)(e))",
            )
            erased += 1
    return erased
