"""Issue 19 (5): a request that meets a connection the database dropped (a restart, a failover)
is repeated once when nothing of it was stored: the client never sees the blip."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from sqlalchemy import text

from tests.conftest import PG_URL, _pg_admin
from tests.idp.conftest import Browser, Idp

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (CI sets CITYID_TEST_POSTGRES_URL)"),
    pytest.mark.parametrize("db_url", ["postgresql"], indirect=True),
]


def _drop_the_servers_connections(idp: Idp) -> int:
    """What a PostgreSQL restart does to the pool: every backend of the IdP's database ends."""
    name = idp.app.extensions["cityid"].engine.url.database
    admin = _pg_admin()
    with admin.connect() as conn:
        n = conn.execute(
            text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :d"),
            {"d": name},
        ).scalar()
    admin.dispose()
    return int(n or 0)


def _warm(idp: Idp, http: Any, cid: str, secret: str) -> None:
    for _ in range(3):  # connections used a moment ago: handed out again without a ping
        assert (
            http.post(
                f"{idp.url}/token", data={"grant_type": "client_credentials"}, auth=(cid, secret), timeout=10
            ).status_code
            == 200
        )


def test_a_token_request_that_meets_a_dropped_connection_is_answered(idp: Idp) -> None:
    cid, secret = idp.add_client(name="Fahrplan", grant_types=["client_credentials"], scope="read")
    http = requests.Session()
    _warm(idp, http, cid, secret or "")
    assert _drop_the_servers_connections(idp) >= 1
    r = http.post(
        f"{idp.url}/token", data={"grant_type": "client_credentials"}, auth=(cid, secret), timeout=10
    )
    assert r.status_code == 200, r.text
    assert r.json()["token_type"] == "Bearer"


def test_a_page_request_that_meets_a_dropped_connection_is_answered(idp: Idp) -> None:
    cid, secret = idp.add_client(name="Fahrplan", grant_types=["client_credentials"], scope="read")
    idp.add_user("anna@example.org")
    browser = Browser(idp)
    _warm(idp, requests.Session(), cid, secret or "")
    page = browser.get(f"{idp.url}/login")
    assert page.status_code == 200
    assert _drop_the_servers_connections(idp) >= 1
    done = browser.login("anna@example.org", "correct horse battery staple", page)
    assert done.status_code in (200, 302, 303), done.text
    assert browser.get(f"{idp.url}/account").status_code == 200


class _Refusing:
    """A database that is shutting down: its connections end and new ones are refused (what a
    PostgreSQL restart looks like for a moment) until the repeat of the request is about to run."""

    def __init__(self, idp: Idp) -> None:
        self.name = idp.app.extensions["cityid"].engine.url.database
        self.admin = _pg_admin()
        self.allowed = True

    def refuse(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": self.name},
            )
        self.allowed = False

    def allow(self) -> None:
        if not self.allowed:
            with self.admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true'))
            self.allowed = True


def test_a_page_whose_first_database_work_is_its_commit_is_repeated_when_the_database_refuses(
    idp: Idp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/faults.py, PostgreSQL restart: GET /forgot stores only its new browser session, at
    the commit; the connection to a database that is shutting down is refused during that flush,
    before any COMMIT was sent. Nothing was stored: the request is repeated, not answered 500."""
    import time as real_time

    from idp import retry

    db = _Refusing(idp)
    _warm(idp, requests.Session(), *[x or "" for x in idp.add_client(
        name="Fahrplan", grant_types=["client_credentials"], scope="read"
    )])  # fmt: skip

    class _Clock:
        monotonic = staticmethod(real_time.monotonic)

        @staticmethod
        def sleep(seconds: float) -> None:  # the repeat's pause: the database is back
            db.allow()
            real_time.sleep(seconds)

    monkeypatch.setattr(retry, "time", _Clock)
    db.refuse()
    try:
        r = requests.get(f"{idp.url}/forgot", timeout=20)
    finally:
        db.allow()
        db.admin.dispose()
    assert r.status_code == 200, r.text[:300]
    assert 'name="csrf_token"' in r.text


def test_a_token_request_during_a_two_second_restart_waits_for_the_database(idp: Idp) -> None:
    """bench/faults.py: `pg_ctl restart -m fast` on a busy machine keeps connections refused for
    1-2 s; the repeat waits until the database answers (idp.retry.WAIT_SECONDS) instead of
    failing after its first pause."""
    import threading

    cid, secret = idp.add_client(name="Fahrplan", grant_types=["client_credentials"], scope="read")
    http = requests.Session()
    _warm(idp, http, cid, secret or "")
    db = _Refusing(idp)
    db.refuse()
    back = threading.Timer(2.0, db.allow)
    back.start()
    try:
        r = http.post(
            f"{idp.url}/token", data={"grant_type": "client_credentials"}, auth=(cid, secret), timeout=30
        )
    finally:
        back.join()
        db.allow()
        db.admin.dispose()
    assert r.status_code == 200, r.text
