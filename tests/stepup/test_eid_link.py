"""The eID link: first use links, one account per eID, eID-only login, verified_claims only
with the ``eid`` scope and consent, hostile callbacks refused without state change."""

from __future__ import annotations

import re
from typing import Any

import requests
from sqlalchemy import func, select

from db import transaction
from db.audit import AuditEvent
from idp.config import LEVEL_HIGH
from idp.eid_models import EidLink, EidPending
from tests.idp.conftest import Browser, Idp, query
from tests.stepup.conftest import PASSWORD, Rp, eid_confirm, post_form, walk


def _service(idp: Idp, scope: str = "openid", **kw: Any) -> Rp:
    cid, secret = idp.add_client(name="Bauamt", redirect_uris=["http://127.0.0.1:9/cb"], scope=scope, **kw)
    return Rp(idp, cid, secret)


def _audit(idp: Idp, action: str, outcome: str) -> list[Any]:
    with transaction(idp.sessions()) as s:
        return list(
            s.execute(
                select(AuditEvent)
                .where(AuditEvent.action == action, AuditEvent.outcome == outcome)
                .order_by(AuditEvent.seq)
            ).scalars()
        )


def _count(idp: Idp, model: Any) -> int:
    with transaction(idp.sessions()) as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def _card_linked(
    eid_idp: Idp, email: str = "anna@example.org", persona: str = "erika"
) -> tuple[Browser, Any]:
    """A citizen who logged in at a service asking for high and so linked her ID card: her
    browser, and that service."""
    rp = _service(eid_idp, min_level=LEVEL_HIGH)
    b = Browser(eid_idp)
    url, _v, _s = rp.authorize_url()
    walk(b, b.follow(b.get(url)), email, persona=persona)
    return b, rp


def test_pseudonym_of_another_account_is_refused_and_audited(eid_idp: Idp) -> None:
    eid_idp.add_user("anna@example.org")
    eid_idp.add_user("bert@example.org")
    rp = _service(eid_idp, min_level=LEVEL_HIGH)
    anna = Browser(eid_idp)
    url, _v, _s = rp.authorize_url()
    steps, page = walk(anna, anna.follow(anna.get(url)), "anna@example.org", persona="erika")
    assert steps == ["/login", "/login/eid"] and "code=" in page.headers["Location"]

    bert = Browser(eid_idp)
    url, _v, _s = rp.authorize_url()
    page = bert.login("bert@example.org", PASSWORD, bert.follow(bert.get(url)))
    refused = eid_confirm(bert, page, persona="erika")  # Erika's card, Bert's account
    assert refused.status_code == 403 and "SIMULATION" in refused.text
    assert "pseudonym_linked_elsewhere" in refused.text
    assert _count(eid_idp, EidLink) == 1
    assert [r.reason for r in _audit(eid_idp, "eid.link", "denied")] == ["pseudonym_linked_elsewhere"]
    # Bert's own card still works, and Bert's account cannot then take a second card.
    again = bert.follow(bert.get(url))
    assert again.url.startswith(f"{eid_idp.url}/login/eid")
    ok = eid_confirm(bert, again, persona="max")
    assert ok.status_code in (200, 302)
    assert _count(eid_idp, EidLink) == 2
    third = eid_confirm(
        bert, bert.follow(bert.get(f"{eid_idp.url}/login/eid")), persona="custom", pseudonym="x1"
    )
    assert third.status_code == 403 and "account_linked_to_other_eid" in third.text


def test_linked_eid_logs_in_alone_and_unlinked_eid_creates_no_account(eid_idp: Idp) -> None:
    eid_idp.add_user("anna@example.org")
    rp = _service(eid_idp, min_level=LEVEL_HIGH)
    first = Browser(eid_idp)
    url, _v, _s = rp.authorize_url()
    walk(first, first.follow(first.get(url)), "anna@example.org", persona="erika")

    # A new browser, nobody logged in: Erika's card logs Anna in at high, no password.
    fresh = Browser(eid_idp)
    start = fresh.follow(fresh.get(f"{eid_idp.url}/login/eid"))
    assert start.status_code == 200 and "SIMULATION" in start.text
    done = eid_confirm(fresh, start, persona="erika")
    assert done.url.rstrip("/").endswith("/account") or done.status_code == 200
    url, verifier, _s = rp.authorize_url()
    steps, page = walk(fresh, fresh.follow(fresh.get(url)), "never@used.example")
    assert steps == []  # high already: the eID alone
    claims = rp.claims(rp.redeem(page.headers["Location"], verifier)["id_token"])
    assert claims["acr"] == LEVEL_HIGH and sorted(claims["amr"]) == ["mfa", "pin", "sc"]

    # Someone else's unknown card, nobody logged in: no account is created.
    stranger = Browser(eid_idp)
    refused = eid_confirm(stranger, stranger.follow(stranger.get(f"{eid_idp.url}/login/eid")), persona="max")
    assert refused.status_code == 403 and 'href="/login"' in refused.text
    assert _count(eid_idp, EidLink) == 1
    assert _audit(eid_idp, "login.eid", "denied")


def test_verified_claims_only_with_eid_scope_and_consent_oidc4ida(eid_idp: Idp) -> None:
    eid_idp.add_user("anna@example.org")
    rp = _service(eid_idp, scope="openid eid", min_level=LEVEL_HIGH)
    browser = Browser(eid_idp)
    url, verifier, _s = rp.authorize_url(scope="openid")
    _steps, page = walk(browser, browser.follow(browser.get(url)), "anna@example.org")
    plain = rp.redeem(page.headers["Location"], verifier)
    assert "verified_claims" not in rp.claims(plain["id_token"])

    # Declining consent for the eid scope releases nothing.
    url, _v, _state = rp.authorize_url(scope="openid eid")
    page = browser.follow(browser.get(url))
    assert "eid" in page.text and 'name="decision"' in page.text
    denied = browser.consent(page, decision="deny")
    assert query(denied.headers["Location"])["error"] == "access_denied"

    url, verifier, _s = rp.authorize_url(scope="openid eid")
    _steps, page = walk(browser, browser.follow(browser.get(url)), "anna@example.org")
    token = rp.redeem(page.headers["Location"], verifier)
    vc = rp.claims(token["id_token"])["verified_claims"]
    assert vc["verification"]["trust_framework"] == "de_cityid_simulation"  # never "eidas" when simulated
    assert vc["verification"]["assurance_level"] == "high"
    assert vc["verification"]["evidence"][0]["record"]["source"]["name"] == "urn:cityid:eid:simulator"
    assert vc["claims"]["family_name"] == "Mustermann" and vc["claims"]["place_of_birth"] == {
        "locality": "Berlin"
    }
    info = requests.get(
        f"{eid_idp.url}/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=10
    ).json()
    assert info["verified_claims"] == vc


def test_hostile_callbacks_change_nothing(eid_idp: Idp) -> None:
    eid_idp.add_user("anna@example.org")
    browser = Browser(eid_idp)
    page = browser.login("anna@example.org", PASSWORD, browser.follow(browser.get(f"{eid_idp.url}/login")))
    start = browser.follow(browser.get(f"{eid_idp.url}/login/eid"))
    sim = post_form(browser, start, {"eid": "start"})
    state = re.search(r'name="state" value="([^"]+)"', sim.text).group(1)  # type: ignore[union-attr]
    cb = f"{eid_idp.url}/login/eid/callback"
    for bad in (
        {"state": "forged", "persona": "erika"},
        {"persona": "erika"},
        {"state": state * 20, "persona": "erika"},
        {"state": state, "persona": "erika", "x": "y" * 5000},
    ):
        assert browser.post(cb, bad).status_code == 400
    assert _count(eid_idp, EidPending) == 1
    # A refused answer (level too low) uses up the pending state.
    low = browser.post(cb, {"state": state, "persona": "erika", "level": "low"})
    assert low.status_code == 400 and "SIMULATION" in low.text
    assert _count(eid_idp, EidPending) == 0
    assert browser.post(cb, {"state": state, "persona": "erika"}).status_code == 400

    # A verified answer completes only in the browser that started it (login CSRF).
    sim = post_form(browser, browser.follow(browser.get(f"{eid_idp.url}/login/eid")), {"eid": "start"})
    state = re.search(r'name="state" value="([^"]+)"', sim.text).group(1)  # type: ignore[union-attr]
    answered = browser.post(cb, {"state": state, "persona": "erika"})
    assert answered.status_code == 303
    attacker = Browser(eid_idp)  # knows the state (it is in the form), not the handover secret
    assert attacker.get(f"{eid_idp.url}/login/eid/complete?state={state}").status_code == 400
    assert browser.get(f"{eid_idp.url}/login/eid/complete?state={state}").status_code == 400  # nor here
    assert browser.post(cb, {"state": state, "persona": "erika"}).status_code == 400  # callback once
    assert _count(eid_idp, EidLink) == 0
    assert browser.follow(browser.get(eid_idp.url + answered.headers["Location"])).status_code == 200
    assert _count(eid_idp, EidLink) == 1
    assert browser.get(eid_idp.url + answered.headers["Location"]).status_code == 400  # completion once
    assert page.status_code == 200


def test_eid_pages_are_absent_without_a_connector(idp: Idp) -> None:
    assert requests.get(f"{idp.url}/login/eid", timeout=10).status_code == 404
    assert requests.get(f"{idp.url}/login/eid/simulator", timeout=10).status_code == 404


def test_simulator_named_but_not_enabled_offers_nothing(idp_factory: Any) -> None:
    idp = idp_factory(eid_connector="simulator", eid_simulator_enabled=False)
    assert requests.get(f"{idp.url}/login/eid", timeout=10).status_code == 404


def test_recent_id_card_login_confirms_account_deletion_without_password_nist_63b_7_2(
    eid_idp: Idp,
) -> None:
    from idp.models import Account
    from tests.idp.conftest import csrf

    eid_idp.add_user("anna@example.org")
    rp = _service(eid_idp, min_level=LEVEL_HIGH)
    first = Browser(eid_idp)
    url, _v, _s = rp.authorize_url()
    walk(first, first.follow(first.get(url)), "anna@example.org", persona="erika")  # links the card

    # Logged in with the password only: the password is asked for, and nothing else will do.
    pwd = Browser(eid_idp)
    pwd.login("anna@example.org", PASSWORD, pwd.follow(pwd.get(f"{eid_idp.url}/login")))
    page = pwd.get(f"{eid_idp.url}/account/delete")
    assert 'name="password"' in page.text
    r = pwd.post(f"{eid_idp.url}/account/delete", {"csrf_token": csrf(page.text), "confirm": "yes"})
    assert r.status_code == 401 and _count(eid_idp, Account) == 1
    assert _audit(eid_idp, "account.delete", "denied")

    # Logged in with the card alone a moment ago: the card confirms it, no password field.
    card = Browser(eid_idp)
    eid_confirm(card, card.follow(card.get(f"{eid_idp.url}/login/eid")), persona="erika")
    page = card.get(f"{eid_idp.url}/account/delete")
    assert page.status_code == 200 and 'name="password"' not in page.text
    r = card.post(f"{eid_idp.url}/account/delete", {"csrf_token": csrf(page.text), "confirm": "yes"})
    assert r.status_code == 200, r.text
    assert _count(eid_idp, Account) == 0 and _count(eid_idp, EidLink) == 0
    (done,) = _audit(eid_idp, "account.delete", "success")
    assert '"confirmed_by": "recent eid factor"' in done.details


def test_a_login_someone_else_started_cannot_be_finished_with_a_card_holders_authentication(
    eid_idp: Idp,
) -> None:
    """The relay: Mallory starts an eID login in his browser (he sees its state), gets Erika to
    authenticate with her card (the upstream URL or SAML form carries his state), and finishes in
    his browser. He must neither be logged in as her nor get her card linked to his account."""
    eid_idp.add_user("erika@example.org")
    erika = Browser(eid_idp)
    erika.login("erika@example.org", PASSWORD, erika.follow(erika.get(f"{eid_idp.url}/login")))
    sim = post_form(erika, erika.follow(erika.get(f"{eid_idp.url}/login/eid")), {"eid": "start"})
    own = re.search(r'name="state" value="([^"]+)"', sim.text).group(1)  # type: ignore[union-attr]
    done = erika.follow(erika.post(f"{eid_idp.url}/login/eid/callback", {"state": own, "persona": "erika"}))
    assert done.status_code == 200 and _count(eid_idp, EidLink) == 1  # her card is hers

    eid_idp.add_user("mallory@example.org")
    for mallory_logged_in in (False, True):
        mallory = Browser(eid_idp)
        if mallory_logged_in:
            mallory.login(
                "mallory@example.org", PASSWORD, mallory.follow(mallory.get(f"{eid_idp.url}/login"))
            )
        sim = post_form(mallory, mallory.follow(mallory.get(f"{eid_idp.url}/login/eid")), {"eid": "start"})
        state = re.search(r'name="state" value="([^"]+)"', sim.text).group(1)  # type: ignore[union-attr]
        victim = Browser(eid_idp)  # Erika's browser, following Mallory's link; no cookie needed
        answered = victim.post(f"{eid_idp.url}/login/eid/callback", {"state": state, "persona": "erika"})
        assert answered.status_code == 303
        assert victim.get(eid_idp.url + answered.headers["Location"]).status_code == 400  # not hers
        r = mallory.get(f"{eid_idp.url}/login/eid/complete?state={state}")
        assert r.status_code == 400  # spent: the relay was seen
        account = mallory.get(f"{eid_idp.url}/account")  # Browser.get does not follow redirects
        assert account.status_code == (200 if mallory_logged_in else 302)
        assert "erika@example.org" not in account.text
    assert _count(eid_idp, EidLink) == 1  # still only Erika's link


def test_a_card_no_connector_can_read_does_not_lock_the_account_out_of_new_factors(eid_idp: Idp) -> None:
    """A linked ID card counts as a means at high only while an eID connector can use it: with
    the connector switched off, a password session may add a passkey again (no lockout)."""
    import dataclasses

    eid_idp.add_user("anna@example.org")
    _card_linked(eid_idp)
    assert _count(eid_idp, EidLink) == 1

    def register_begin() -> int:
        b = Browser(eid_idp)  # the password only
        b.login("anna@example.org", PASSWORD, b.follow(b.get(f"{eid_idp.url}/login")))
        page = b.get(f"{eid_idp.url}/account/security-keys")
        token = re.search(r'data-csrf="([^"]+)"', page.text)
        assert token, page.text[:300]
        r = b.http.post(
            f"{eid_idp.url}/account/security-keys/register/begin",
            json={},
            headers={"X-CSRF-Token": token.group(1)},
            timeout=10,
        )
        return r.status_code

    assert register_begin() == 403  # the card is a means at high: the password alone adds nothing
    rt = eid_idp.app.extensions["cityid"]
    rt.config = dataclasses.replace(rt.config, eid_connector="")
    assert register_begin() == 200


def test_the_data_export_carries_the_linked_card_and_its_verified_attributes_gdpr_15_20(eid_idp: Idp) -> None:
    eid_idp.add_user("anna@example.org")
    b, _rp = _card_linked(eid_idp)
    page = b.get(f"{eid_idp.url}/account")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    data = b.post(f"{eid_idp.url}/account/export", {"csrf_token": token.group(1)}).json()
    card = data["eid"]
    assert card["connector"] == "simulator" and card["level"] and card["linked_at"]
    assert {a["name"] for a in card["verified_attributes"]} >= {"family_name", "given_name"}
    assert "Mustermann" in {a["value"] for a in card["verified_attributes"]}
    assert "pseudonym" not in str(card)


def test_the_service_desk_unlinks_a_card_so_a_new_one_can_be_linked(eid_idp: Idp) -> None:
    """A renewed ID card has a new pseudonym and cannot be linked next to the old one."""
    from click.testing import CliRunner

    from cli import main as cli_main

    eid_idp.add_user("anna@example.org")
    _b, rp = _card_linked(eid_idp)
    cfg = eid_idp.config
    env = {"CITYID_DATABASE_URL": cfg.database_url, "CITYID_SECRET_KEY": cfg.secret_key}
    env |= {"CITYID_KEY_PASSPHRASE": cfg.key_passphrase, "CITYID_ISSUER": cfg.issuer}
    args = ["user", "unlink-eid", "anna@example.org", "--data-dir", str(cfg.data_dir), "--json"]
    r = CliRunner().invoke(cli_main, args, env=env)
    assert r.exit_code == 0, r.output
    assert _count(eid_idp, EidLink) == 0 and _audit(eid_idp, "eid.unlink", "success")
    assert CliRunner().invoke(cli_main, args, env=env).exit_code == 4  # nothing left to unlink
    new_card = Browser(eid_idp)
    url, _v, _s = rp.authorize_url()
    walk(new_card, new_card.follow(new_card.get(url)), "anna@example.org", persona="max")
    assert _count(eid_idp, EidLink) == 1
