"""The error page of a request whose transaction the database ended still renders.

Choosing the page's language reads the browser session's pending authorization (its
``ui_locales``, OIDC Core §3.1.2.1). After the database ended the request's transaction (a
restart: bench/faults.py), that row is expired and reading it again raises; the error page was
then itself an exception, and the citizen got granian's empty 500 instead of the page.
"""

from __future__ import annotations

import datetime as dt
import json

from db import transaction
from idp import browser, i18n, uow
from idp.models import LoginSession
from tests.idp.conftest import Idp


def test_the_language_of_an_error_page_is_chosen_without_the_database_once_it_ended_the_transaction(
    idp: Idp,
) -> None:
    token = "t" * 43
    keys = idp.app.extensions["cityid"].keys
    with transaction(idp.sessions()) as s:
        s.add(
            LoginSession(
                id_digest=keys.token_digest(token),
                expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10),
                csrf_secret="c" * 43,
                pending=json.dumps({"url": "/authorize", "ui": "tr"}),
            )
        )
    with idp.app.app_context():
        cookie = browser.cookie_name()
    headers = {"Cookie": f"{cookie}={token}", "Accept-Language": "en"}
    with idp.app.test_request_context("/login", method="POST", headers=headers):
        row = browser.current()
        assert row is not None and i18n.select_locale() == "tr"  # the pending request's language
        uow.db().expire(row)  # as after a failed flush: the row is read again on its next use
        uow.db().connection().invalidate()  # the database ended the connection mid-transaction
        # no PendingRollbackError: the page falls back to the browser's language
        assert i18n.select_locale() == "en"
