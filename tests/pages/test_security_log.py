"""The security log on "My account": what the citizen did, and nothing a stranger can put there."""

from __future__ import annotations

import requests
from sqlalchemy import select

from db.audit import AuditEvent
from tests.idp.conftest import Browser, Idp
from tests.pages.helpers import logged_in


def test_refused_requests_naming_the_account_cannot_crowd_the_security_log(idp: Idp) -> None:
    account_id = idp.add_user("lotte@example.org")
    b, _ = logged_in(idp, "lotte@example.org")
    b.http.headers["Accept-Language"] = "en"
    assert "Logged in with password" in b.get(idp.url + "/account").text
    # a stranger sends requests that claim the account id as their client id (it is the `sub`
    # of public-subject clients, so it is no secret)
    for _ in range(25):
        data = {"grant_type": "client_credentials", "client_id": account_id}
        assert requests.post(idp.url + "/token", data=data, timeout=10).status_code == 401
        data = {"response_type": "code", "client_id": account_id, "redirect_uri": "http://x.invalid/"}
        assert requests.post(idp.url + "/par", data=data, timeout=10).status_code in (400, 401)
    Browser(idp).get(f"{idp.url}/authorize?client_id={account_id}&response_type=code")
    page = b.get(idp.url + "/account").text
    assert "Logged in with password" in page  # the citizen's own entry is still shown
    with idp.sessions()() as s:
        named = s.scalars(select(AuditEvent.action).where(AuditEvent.actor == account_id)).all()
        claimed = s.scalars(
            select(AuditEvent.details).where(AuditEvent.action.in_(("token.refuse", "par.refuse")))
        ).all()
    assert set(named) <= {"login.password", "account.create"}  # no refusal speaks in its name
    assert len(claimed) == 50 and all(account_id in d for d in claimed)  # kept as a claim, for admins
