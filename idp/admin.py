"""Administrative actions on accounts. No Flask."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db import audit
from idp.instance import InstanceKeys
from idp.models import Account, Grant, LoginSession
from idp.oauth.server import revoke_grant


def disable_account(
    session: Session, keys: InstanceKeys, email_or_id: str, *, actor: str = "admin"
) -> str | None:
    acct = session.get(Account, email_or_id)
    if acct is None:
        acct = session.execute(
            select(Account).where(Account.email_index == keys.email_lookup(email_or_id))
        ).scalar()
    if acct is None:
        return None
    acct.disabled = True
    session.execute(delete(LoginSession).where(LoginSession.account_id == acct.id))
    for gid in session.execute(select(Grant.id).where(Grant.account_id == acct.id)).scalars():
        revoke_grant(session, gid, "account disabled")
    audit.record(
        session,
        action="account.disable",
        outcome="success",
        actor=actor,
        subject=acct.id,
        reason="disabled by admin",
    )
    return acct.id
