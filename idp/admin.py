"""Administrative actions on accounts (the ``cityid user`` commands). No Flask."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import audit
from idp.instance import InstanceKeys
from idp.keys import KeyCache
from idp.models import Account, Grant
from idp.oauth.backchannel import end_sessions
from idp.oauth.server import revoke_grant


def find_account(session: Session, keys: InstanceKeys, email_or_id: str) -> Account | None:
    acct = session.get(Account, email_or_id)
    if acct is None:
        acct = session.execute(
            select(Account).where(Account.email_index == keys.email_lookup(email_or_id))
        ).scalar()
    return acct


def disable_account(
    session: Session,
    keys: InstanceKeys,
    email_or_id: str,
    *,
    key_cache: KeyCache,
    issuer: str,
    actor: str = "admin",
) -> str | None:
    """The account cannot log in any more: its browser sessions end here and at the services
    (back-channel logout), and every grant is revoked, so its tokens stop working."""
    acct = find_account(session, keys, email_or_id)
    if acct is None:
        return None
    acct.disabled = True
    ended = end_sessions(
        session,
        key_cache,
        issuer=issuer,
        subject_key=keys.subject,
        account_id=acct.id,
        reason="account disabled",
    )
    for gid in session.execute(select(Grant.id).where(Grant.account_id == acct.id)).scalars():
        revoke_grant(session, gid, "account disabled")
    audit.record(
        session,
        action="account.disable",
        outcome="success",
        actor=actor,
        subject=acct.id,
        reason="disabled by admin",
        details={"sessions_ended": ended.sessions, "logout_notices": ended.notices},
    )
    return acct.id


def enable_account(
    session: Session, keys: InstanceKeys, email_or_id: str, *, actor: str = "admin"
) -> str | None:
    """Undo :func:`disable_account`: the citizen can log in again (their old sessions and tokens
    stay ended; services are signed in to anew)."""
    acct = find_account(session, keys, email_or_id)
    if acct is None:
        return None
    was_disabled = acct.disabled
    acct.disabled = False
    audit.record(
        session,
        action="account.enable",
        outcome="success",
        actor=actor,
        subject=acct.id,
        reason="enabled by admin" if was_disabled else "enabled by admin (was not disabled)",
    )
    return acct.id
