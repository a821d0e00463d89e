"""Who may see the insights: accounts with a staff role, at level *substantial* or above."""

from __future__ import annotations

from sqlalchemy.orm import Session

from db import audit
from idp.admin import find_account
from idp.instance import InstanceKeys
from idp.models import Account

ROLES = ("analyst", "admin")
INSIGHTS_ROLES = frozenset(ROLES)  # both see /insights


class UnknownRole(ValueError):
    pass


def roles_of(account: Account) -> frozenset[str]:
    return frozenset((account.roles or "").split())


def may_see_insights(account: Account) -> bool:
    return bool(roles_of(account) & INSIGHTS_ROLES)


def change_role(
    session: Session, keys: InstanceKeys, email_or_id: str, role: str, *, grant: bool, actor: str = "admin"
) -> str | None:
    """Grant or withdraw ``role``; the account's id, None if there is no such account. Audited."""
    if role not in ROLES:
        raise UnknownRole(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    acct = find_account(session, keys, email_or_id)
    if acct is None:
        return None
    roles = set(roles_of(acct))
    before = set(roles)
    if grant:
        roles.add(role)
    else:
        roles.discard(role)
    acct.roles = " ".join(sorted(roles))
    audit.record(
        session,
        action="account.role_add" if grant else "account.role_remove",
        outcome="success",
        actor=actor,
        subject=acct.id,
        reason=f"role {role}" + ("" if roles != before else " (unchanged)"),
    )
    return acct.id
