"""Password guessing is throttled per e-mail address (NIST SP 800-63B §5.2.2), alike for known
and unknown addresses, across processes (state in the database)."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from db import audit, transaction, utcnow
from db.audit import AuditEvent
from idp import accounts, throttle
from idp.models import LoginSession, LoginThrottle
from tests.idp.conftest import Browser, Idp

PASSWORD = "correct horse battery staple"


@pytest.mark.parametrize(
    ("failures", "delay"),
    [
        (0, None),
        (4, None),
        (5, dt.timedelta(seconds=30)),
        (6, dt.timedelta(seconds=60)),
        (9, dt.timedelta(seconds=480)),
        (10, dt.timedelta(minutes=15)),
        (99, dt.timedelta(minutes=15)),
        (100, throttle.UNTIL_RESET),
        (10_000, throttle.UNTIL_RESET),
    ],
)
def test_delay_grows_from_the_sixth_failure_and_stops_at_the_hard_limit_nist_63b_5_2_2(
    failures: int, delay: dt.timedelta | None
) -> None:
    assert throttle.delay_after(failures) == delay


def _login(b: Browser, email: str, password: str) -> requests.Response:
    b.http.headers["Accept-Language"] = "en"
    page = b.get(f"{b.idp.url}/login")
    return b.login(email, password, page) if password else page


def _row(idp: Idp, email: str) -> LoginThrottle | None:
    with transaction(idp.sessions()) as s:
        row = s.get(LoginThrottle, idp.keys.email_lookup(email))
        if row is not None:
            s.expunge(row)
        return row


def _set(idp: Idp, email: str, **values: object) -> None:
    with transaction(idp.sessions()) as s:
        row = s.get(LoginThrottle, idp.keys.email_lookup(email))
        assert row is not None
        for k, v in values.items():
            setattr(row, k, v)


def _sessions(idp: Idp) -> int:
    with transaction(idp.sessions()) as s:
        n = s.execute(
            select(func.count()).select_from(LoginSession).where(LoginSession.account_id.isnot(None))
        )
        return int(n.scalar_one())


@pytest.mark.parametrize("email", ["anna@example.org", "nobody@example.org"])
def test_sixth_attempt_is_refused_without_checking_the_password_alike_for_unknown_addresses(
    idp: Idp, email: str
) -> None:
    idp.add_user("anna@example.org")
    b = Browser(idp)
    for _ in range(throttle.FREE_FAILURES):
        r = _login(b, email, "wrong password 123")
        assert r.status_code == 401
    row = _row(idp, email)
    assert row is not None and row.failures == 5 and row.blocked_until is not None
    # even the right password does not get through while the address is held
    r = _login(b, email, PASSWORD)
    assert r.status_code == 429 and "Please try again in 1 minute," in r.text
    assert _sessions(idp) == 0
    with transaction(idp.sessions()) as s:
        reasons = s.execute(select(AuditEvent.reason).where(AuditEvent.action == "login.password")).scalars()
        assert "throttled after 5 failures" in list(reasons)
        assert s.execute(select(AuditEvent).where(AuditEvent.action == "login.throttle")).first()
        assert audit.verify(s).ok


def test_block_expires_and_a_success_clears_the_run(idp: Idp) -> None:
    idp.add_user("anna@example.org")
    b = Browser(idp)
    for _ in range(6):
        _login(b, "anna@example.org", "wrong password 123")
    _set(idp, "anna@example.org", blocked_until=utcnow() - dt.timedelta(seconds=1))
    r = _login(b, "anna@example.org", PASSWORD)
    assert r.status_code in (200, 302, 303) and _sessions(idp) == 1
    assert _row(idp, "anna@example.org") is None


def test_failures_a_day_apart_are_not_one_run(idp: Idp) -> None:
    b = Browser(idp)
    for _ in range(4):
        _login(b, "anna@example.org", "wrong password 123")
    _set(idp, "anna@example.org", last_failure_at=utcnow() - dt.timedelta(days=2))
    _login(b, "anna@example.org", "wrong password 123")
    row = _row(idp, "anna@example.org")
    assert row is not None and row.failures == 1 and row.blocked_until is None


def test_hard_limit_holds_until_the_password_is_reset(idp: Idp) -> None:
    idp.add_user("anna@example.org")
    b = Browser(idp)
    _login(b, "anna@example.org", "wrong password 123")
    _set(idp, "anna@example.org", failures=99, blocked_until=None)
    _login(b, "anna@example.org", "wrong password 123")
    row = _row(idp, "anna@example.org")
    assert row is not None and row.failures == 100
    # a quiet week does not end it
    _set(idp, "anna@example.org", last_failure_at=utcnow() - dt.timedelta(days=7))
    r = _login(b, "anna@example.org", PASSWORD)
    assert r.status_code == 429 and "blocked after too many wrong passwords" in r.text
    # a reset by e-mail link sets a new password: the address is free again
    with transaction(idp.sessions()) as s:
        acct = accounts.find_by_email(s, idp.keys, "anna@example.org")
        assert acct is not None
        accounts.set_password(s, acct, "a brand new long passphrase")
    assert _row(idp, "anna@example.org") is None
    r = _login(b, "anna@example.org", "a brand new long passphrase")
    assert r.status_code in (200, 302, 303) and _sessions(idp) == 1


def test_quiet_runs_are_forgotten_but_a_hard_limit_on_an_account_is_kept(idp: Idp) -> None:
    idp.add_user("held@example.org")
    b = Browser(idp)
    for email in ("quiet@example.org", "held@example.org", "made-up@example.org"):
        _login(b, email, "wrong password 123")
    _set(idp, "quiet@example.org", last_failure_at=utcnow() - dt.timedelta(days=2))
    for email in ("held@example.org", "made-up@example.org"):
        _set(idp, email, failures=100, last_failure_at=utcnow() - dt.timedelta(days=2))
        _set(idp, email, blocked_until=utcnow() + throttle.UNTIL_RESET)
    with transaction(idp.sessions()) as s:
        throttle.purge(s, utcnow())
    assert _row(idp, "quiet@example.org") is None
    assert _row(idp, "held@example.org") is not None
    # no account, no password to guess: the hold would only meet whoever registers it one day
    assert _row(idp, "made-up@example.org") is None


def test_the_failed_login_record_of_an_address_ends_with_its_account_and_before_a_new_one(idp: Idp) -> None:
    from idp.privacy import erase_account

    account_id = idp.add_user("weg@example.org")
    for email in ("weg@example.org", "neu@example.org"):
        _login(Browser(idp), email, "wrong password 123")
        assert _row(idp, email) is not None
    with transaction(idp.sessions()) as s:  # GDPR Art. 17: nothing keyed by the address stays
        erase_account(s, idp.keys, idp.key_cache, issuer=idp.url, account_id=account_id)
    assert _row(idp, "weg@example.org") is None
    idp.add_user("neu@example.org")  # guesses before it was an account do not count against it
    assert _row(idp, "neu@example.org") is None


def test_concurrent_guesses_get_no_more_attempts_than_the_schedule_nist_63b_5_2_2(idp: Idp) -> None:
    # Each attempt is counted before its password is checked: however many arrive at once, the
    # one that starts the hold refuses all later ones; none sees a stale count.
    idp.add_user("anna@example.org")

    def guess(_: int) -> int:
        return _login(Browser(idp), "anna@example.org", "wrong password 123").status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(guess, range(24)))
    assert (
        statuses.count(401) == throttle.FREE_FAILURES and statuses.count(429) == 24 - throttle.FREE_FAILURES
    )
    row = _row(idp, "anna@example.org")
    assert row is not None and row.failures == throttle.FREE_FAILURES


def test_a_right_password_for_an_unconfirmed_address_does_not_count_as_a_guess(idp: Idp) -> None:
    idp.add_user("neu@example.org", verified=False)
    b = Browser(idp)
    for _ in range(throttle.FREE_FAILURES + 2):
        r = _login(b, "neu@example.org", PASSWORD)
        assert r.status_code == 401 and "confirm your e-mail address" in r.text
    assert _row(idp, "neu@example.org") is None
