"""A citizen's consent to a service: given once, widened by later grants, never duplicated."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp.models import Consent


def grant(session: Session, account_id: str, client_id: str, scope: str) -> None:
    """Record that the citizen allowed ``scope`` for the client: the union with what she allowed
    before. Two first consents at once (two tabs, a double click) are one row: the second insert
    waits for the first and meets the primary key, then widens the row the first one stored."""
    key = (account_id, client_id)
    row = session.get(Consent, key, with_for_update=True)
    if row is None:
        try:
            with session.begin_nested():
                session.add(Consent(account_id=account_id, client_id=client_id, scope=scope))
                session.flush()
            return
        except IntegrityError:
            # the other request committed first: read its row (a new statement sees it) and lock it
            row = session.get(Consent, key, with_for_update=True, populate_existing=True)
            if row is None:  # it was withdrawn meanwhile: ours is the only one
                session.add(Consent(account_id=account_id, client_id=client_id, scope=scope))
                return
    row.scope = " ".join(sorted(set(row.scope.split()) | set(scope.split())))
