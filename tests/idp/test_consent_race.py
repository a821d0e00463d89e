"""Issue 19 (1): two first consents of one citizen for one service at once are one row, no 500."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import select

from db import transaction
from idp import consents
from idp.models import Consent
from tests.idp.conftest import Idp


def test_concurrent_first_consents_are_one_widened_row_not_an_integrity_error(idp: Idp) -> None:
    cid, _ = idp.add_client(
        name="Bürgeramt", redirect_uris=["https://rp.example/cb"], scope="openid profile email"
    )
    acct = idp.add_user("race@example.org")
    sessions = idp.sessions()
    errors: list[BaseException] = []

    first = sessions()
    consents.grant(first, acct, cid, "openid profile")
    first.flush()  # the first request's insert holds the key (row lock / write lock) until commit

    def second() -> None:
        try:
            with transaction(sessions) as s:
                consents.grant(s, acct, cid, "openid email")  # waits for the first, then widens
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.5)  # let the second request reach the key and wait there
    first.commit()
    first.close()
    t.join(30)
    assert not t.is_alive()
    assert errors == []
    with sessions() as s:
        rows: list[Any] = list(s.execute(select(Consent).where(Consent.account_id == acct)).scalars())
    assert [(r.client_id, r.scope) for r in rows] == [(cid, "email openid profile")]
