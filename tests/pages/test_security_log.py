"""The security log on "My account": what the citizen did, and nothing a stranger can put there."""

from __future__ import annotations

import requests
from sqlalchemy import delete, select

from db import transaction
from db.audit import AuditEvent
from idp.models import LoginThrottle
from tests.idp.conftest import Browser, Idp, csrf
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


def test_a_strangers_device_requests_naming_the_account_stay_out_of_its_security_log(idp: Idp) -> None:
    account_id = idp.add_user("vera@example.org")
    idp.add_user("eve@example.org")
    vera, _ = logged_in(idp, "vera@example.org")
    vera.http.headers["Accept-Language"] = "en"
    eve, eve_page = logged_in(idp, "eve@example.org")
    token = csrf(eve_page)
    for _ in range(25):  # more than the log shows
        r = eve.post(f"{idp.url}/account/devices/{account_id}/rename", {"csrf_token": token, "name": "x"})
        assert r.status_code == 400
    assert "Logged in with password" in vera.get(idp.url + "/account").text
    with idp.sessions()() as s:
        about_vera = s.scalars(select(AuditEvent.action).where(AuditEvent.subject == account_id)).all()
    assert not any(a.startswith("smartcard.device_") for a in about_vera)


def test_wrong_passwords_for_the_account_are_logged_and_shown_to_the_citizen_asvs_7_2_1(idp: Idp) -> None:
    account_id = idp.add_user("olga@example.org")
    guesser = Browser(idp)
    for i in range(6):
        page = guesser.get(idp.url + "/login")
        r = guesser.post(
            idp.url + "/login",
            {"csrf_token": csrf(page.text), "email": "olga@example.org", "password": f"guess{i}x" * 2},
        )
        assert r.status_code in (401, 429)
    with idp.sessions()() as s:
        rows = s.execute(
            select(AuditEvent.action, AuditEvent.actor, AuditEvent.reason).where(
                AuditEvent.subject == account_id
            )
        ).all()
    failed = [r for r in rows if r.action == "login.password" and r.reason == "bad_credentials"]
    assert failed and all(r.actor == "anonymous" for r in failed)  # someone, not the citizen
    assert any(r.action == "login.throttle" for r in rows)  # the hold it started, for admins
    with transaction(idp.sessions()) as s:  # the hold ends (as after its time, or an admin's unblock)
        s.execute(delete(LoginThrottle))
    olga, _ = logged_in(idp, "olga@example.org")
    olga.http.headers["Accept-Language"] = "en"
    assert "Failed login attempt" in olga.get(idp.url + "/account").text


def test_times_on_my_account_name_their_time_zone(idp: Idp) -> None:
    import re

    idp.add_user("zara@example.org")
    b, _ = logged_in(idp, "zara@example.org")
    german = b.get(idp.url + "/account").text
    # "Account created on", the security log: local time of the city with its zone (MEZ/MESZ)
    assert re.search(r"\d\d\.\d\d\.\d{4}, \d\d:\d\d:\d\d MES?Z<", german), german
    b.http.headers["Accept-Language"] = "en"
    english = b.get(idp.url + "/account").text
    assert re.search(r"\d{4}, \d{1,2}:\d\d:\d\d\s[AP]M CES?T<", english), english
