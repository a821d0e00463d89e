"""The wallet as a route to *high*, through HTTP: a real cityid, a citizen's browser, the
walletsim holder (sd-jwt reference implementation) answering like a wallet app."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from jwcrypto import jwk
from sqlalchemy import func, select

from db import transaction
from db.audit import AuditEvent
from idp.config import LEVEL_HIGH
from idp.eid_models import EidLink
from tests.idp.conftest import Browser
from tests.stepup.conftest import PASSWORD, Rp
from tests.wallet.conftest import WalletWorld, wallet_link
from walletsim.holder import forged_disclosure

EMAIL = "anna@example.org"


def _rp(world: WalletWorld) -> Rp:
    cid, secret = world.idp.add_client(
        name="Bauamt", redirect_uris=["http://127.0.0.1:9/cb"], min_level=LEVEL_HIGH
    )
    return Rp(world.idp, cid, secret)


def _count(world: WalletWorld, model: Any) -> int:
    with transaction(world.idp.sessions()) as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def _denied(world: WalletWorld) -> list[str]:
    with transaction(world.idp.sessions()) as s:
        rows = s.execute(
            select(AuditEvent)
            .where(AuditEvent.action == "eid.verify", AuditEvent.outcome == "denied")
            .order_by(AuditEvent.seq)
        ).scalars()
        return [r.reason for r in rows]


def _to_eid_page(world: WalletWorld, rp: Rp, browser: Browser) -> tuple[Any, str]:
    url, verifier, _s = rp.authorize_url()
    page = browser.login(EMAIL, PASSWORD, browser.follow(browser.get(url)))
    assert page.status_code == 200 and page.url.startswith(f"{world.idp.url}/login/eid"), page.url
    assert "Use your ID wallet" in page.text or "ID-Wallet" in page.text
    return page, verifier


def test_citizen_at_low_steps_up_to_high_with_wallet_pid_and_id_token_says_so(world: WalletWorld) -> None:
    world.idp.add_user(EMAIL)
    rp = _rp(world)
    b = Browser(world.idp)
    page, verifier = _to_eid_page(world, rp, b)
    _waiting, link = wallet_link(b, page)
    answer = world.holder.answer(link)
    assert answer.status_code == 200, answer.text
    redirect_uri = answer.json()["redirect_uri"]  # OpenID4VP 1.0 §8.2, same device
    done = b.follow(b.get(redirect_uri))
    if done.status_code == 200 and 'name="decision"' in done.text:
        done = b.consent(done)
    assert done.status_code in (302, 303) and "code=" in done.headers["Location"], done.text[:500]
    claims = rp.claims(rp.redeem(done.headers["Location"], verifier)["id_token"])
    assert claims["acr"] == LEVEL_HIGH
    assert "wallet" in claims["amr"] and "pwd" in claims["amr"]
    assert _count(world, EidLink) == 1
    with transaction(world.idp.sessions()) as s:  # kept like the ID card's: value, source, level
        from idp import eid_store
        from policies import Level

        link = s.execute(select(EidLink)).scalar_one()
        attrs = {
            a.name: a for a in eid_store.verified_attributes(s, world.idp.keys.personal_data, link.account_id)
        }
    assert link.connector == "wallet" and link.simulation is True
    assert attrs["family_name"].value == "Mustermann" and attrs["place_of_birth"].value == "Berlin"
    assert attrs["birthdate"].level is Level.HIGH
    assert attrs["given_name"].source == "urn:cityid:eid:wallet:https://pid.test.example"
    assert "nationality" not in attrs  # not asked for (data minimisation)

    # A second login, another browser, nobody logged in: the same wallet reaches the same account.
    fresh = Browser(world.idp)
    start = fresh.follow(fresh.get(f"{world.idp.url}/login/eid"))
    waiting, link = wallet_link(fresh, start)
    assert "<img" not in waiting.text  # no QR (cross-device) login without an account
    second = world.holder.answer(link)
    assert second.status_code == 200, second.text
    fresh.follow(fresh.get(second.json()["redirect_uri"]))
    url, verifier2, _s = rp.authorize_url()
    page = fresh.follow(fresh.get(url))
    if page.status_code == 200 and 'name="decision"' in page.text:
        page = fresh.consent(page)
    assert page.status_code in (302, 303) and "code=" in page.headers["Location"], page.text[:300]
    again = rp.claims(rp.redeem(page.headers["Location"], verifier2)["id_token"])
    assert again["sub"] == claims["sub"] and again["acr"] == LEVEL_HIGH
    assert _count(world, EidLink) == 1


@pytest.mark.parametrize("world", ["x509_hash"], indirect=True)
def test_x509_hash_client_identifier_prefix_haip(world: WalletWorld) -> None:
    """OpenID4VP 1.0 §5.9.3 / HAIP 1.0: client_id x509_hash:<SHA-256 of the verifier certificate>;
    the holder checks it against the request object's x5c, the KB-JWT's aud carries it."""
    world.idp.add_user(EMAIL)
    rp = _rp(world)
    b = Browser(world.idp)
    page, verifier = _to_eid_page(world, rp, b)
    _waiting, link = wallet_link(b, page)
    assert "client_id=x509_hash%3A" in link
    answer = world.holder.answer(link)
    assert answer.status_code == 200, answer.text
    done = b.follow(b.get(answer.json()["redirect_uri"]))
    if done.status_code == 200 and 'name="decision"' in done.text:
        done = b.consent(done)
    assert rp.claims(rp.redeem(done.headers["Location"], verifier)["id_token"])["acr"] == LEVEL_HIGH


def test_cross_device_qr_then_waiting_page_continues(world: WalletWorld) -> None:
    world.idp.add_user(EMAIL)
    rp = _rp(world)
    b = Browser(world.idp)
    page, verifier = _to_eid_page(world, rp, b)
    waiting, _same = wallet_link(b, page)
    assert 'src="data:image/svg+xml' in waiting.text  # the QR code
    status_url = re.search(r'data-status-url="([^"]+)"', waiting.text)
    assert status_url
    poll = b.get(world.idp.url + status_url.group(1).replace("&amp;", "&"))
    assert poll.json() == {"status": "pending"}
    # The phone's wallet scanned the QR code: the cross-device request.
    qr_link = _same.replace("flow%3Dsame", "flow%3Dcross")
    answer = world.holder.answer(qr_link)
    assert answer.status_code == 200 and "redirect_uri" not in answer.json()
    assert b.get(world.idp.url + status_url.group(1).replace("&amp;", "&")).json() == {"status": "approved"}
    # Someone who knows the URL (it is in the QR code's page, not in the QR code) but is not the
    # browser that started gets nothing: the answer stays for the starter.
    stranger = Browser(world.idp)
    assert stranger.get(waiting.url).status_code == 400
    assert stranger.get(world.idp.url + status_url.group(1).replace("&amp;", "&")).json() == {
        "status": "expired"
    }
    confirm = b.get(waiting.url)
    assert confirm.status_code == 200 and 'action="/login/eid/wallet/confirm"' in confirm.text
    done = b.follow(b.post(world.idp.url + "/login/eid/wallet/confirm", _confirm_form(confirm, "link")))
    if done.status_code == 200 and 'name="decision"' in done.text:
        done = b.consent(done)
    assert "code=" in done.headers["Location"]
    assert rp.claims(rp.redeem(done.headers["Location"], verifier)["id_token"])["acr"] == LEVEL_HIGH


def _confirm_form(page: Any, decision: str) -> dict[str, str]:
    fields = dict(re.findall(r'name="(csrf_token|state)" value="([^"]*)"', page.text))
    return {**fields, "decision": decision}


def _confirm_audit(world: WalletWorld) -> list[tuple[str, str]]:
    with transaction(world.idp.sessions()) as s:
        rows = s.execute(select(AuditEvent).where(AuditEvent.action == "wallet.confirm")).scalars()
        return [(r.outcome, r.reason) for r in rows]


def test_cross_device_first_link_needs_confirmation_showing_the_pid_and_cancel_links_nothing(
    world: WalletWorld,
) -> None:
    """Review finding: whoever sees the QR code can answer it with his wallet. A first link
    through the QR code shows the PID's person in the citizen's browser; cancel links nothing."""
    world.idp.add_user(EMAIL)
    rp = _rp(world)
    b = Browser(world.idp)
    page, _verifier = _to_eid_page(world, rp, b)
    waiting, same = wallet_link(b, page)
    answer = world.holder.answer(same.replace("flow%3Dsame", "flow%3Dcross"))  # the other's phone
    assert answer.status_code == 200, answer.text
    confirm = b.get(waiting.url)
    assert confirm.status_code == 200, confirm.text[:300]
    assert (
        'action="/login/eid/wallet/confirm"' in confirm.text
        and "Mustermann" in confirm.text
        and "Location" not in confirm.headers
    )
    assert _count(world, EidLink) == 0  # nothing linked before she answers
    # Without the CSRF token nothing happens.
    assert (
        b.post(
            world.idp.url + "/login/eid/wallet/confirm", {**_confirm_form(confirm, "link"), "csrf_token": "x"}
        ).status_code
        == 400
    )
    cancelled = b.post(world.idp.url + "/login/eid/wallet/confirm", _confirm_form(confirm, "cancel"))
    assert cancelled.status_code == 200 and "Es wurde nichts verknüpft" in cancelled.text
    assert _count(world, EidLink) == 0
    assert [o for o, _r in _confirm_audit(world)] == ["denied"]
    # The answer is spent: neither the waiting page nor a late "link" uses it.
    assert b.get(waiting.url).status_code == 400
    assert (
        b.post(world.idp.url + "/login/eid/wallet/confirm", _confirm_form(confirm, "link")).status_code == 400
    )
    assert _count(world, EidLink) == 0


def _start(world: WalletWorld) -> tuple[Browser, Any, str]:
    world.idp.add_user(EMAIL)
    rp = _rp(world)
    b = Browser(world.idp)
    page, _v = _to_eid_page(world, rp, b)
    waiting, link = wallet_link(b, page)
    return b, waiting, link


def _assert_refused(world: WalletWorld, b: Browser, waiting: Any, answer: Any, code: str) -> None:
    """A protocol error to the wallet, the refusal audited, no link, the citizen's page says so."""
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request" and code in answer.json()["error_description"]
    assert any(r.startswith(code) for r in _denied(world)), _denied(world)
    assert _count(world, EidLink) == 0
    page = b.get(waiting.url)
    assert page.status_code == 400
    assert "Diese Wallet-Anfrage kann nicht verwendet werden" in page.text  # German by default


def _other_issuer_credential(world: WalletWorld) -> str:
    from walletsim.pid import TestPidProvider

    stranger = TestPidProvider(status_uri=world.provider.status_uri, cn="Unlisted PID Provider")
    return stranger.issue(world.holder.key)[0]


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        pytest.param(lambda w: {"nonce": "not-the-request-nonce"}, "nonce_mismatch", id="wrong-nonce"),
        pytest.param(
            lambda w: {"extra_disclosures": (forged_disclosure("given_name", "Mallory"),)},
            "disclosure_digest_unknown",
            id="digest-not-in-credential",
        ),
        pytest.param(
            lambda w: {"credential": _other_issuer_credential(w)},
            "issuer_not_trusted",
            id="issuer-outside-trust-list",
        ),
        pytest.param(
            lambda w: (w.provider.revoke(w.index), {})[1], "credential_revoked", id="revoked-status-bit"
        ),
        pytest.param(
            lambda w: {
                "credential": w.provider.issue(
                    w.holder.key, iat=datetime.now(UTC) - timedelta(days=100), lifetime=timedelta(days=90)
                )[0]
            },
            "credential_expired",
            id="expired-pid",
        ),
        pytest.param(
            lambda w: {"kb_key": jwk.JWK.generate(kty="EC", crv="P-256")},
            "key_binding_invalid",
            id="kb-other-key",
        ),
        pytest.param(
            lambda w: {"aud": "x509_san_dns:other-verifier.example"}, "audience_mismatch", id="other-aud"
        ),
        pytest.param(lambda w: {"encrypt": False}, "response_not_encrypted", id="not-encrypted"),
    ],
)
def test_wallet_refusals_change_nothing_and_are_audited(world: WalletWorld, tamper: Any, code: str) -> None:
    b, waiting, link = _start(world)
    answer = world.holder.answer(link, **tamper(world))
    _assert_refused(world, b, waiting, answer, code)


def test_replayed_response_and_replayed_presentation_are_refused(world: WalletWorld) -> None:
    _b, _waiting, link = _start(world)
    ok = world.holder.answer(link)
    assert ok.status_code == 200
    assert world.holder.last_post is not None
    uri, form = world.holder.last_post
    again = requests.post(uri, data=form, timeout=10)  # the same response, once more
    assert again.status_code == 400 and "already answered" in again.json()["error_description"]
    # The captured presentation in a new request: its nonce is the old request's.
    old = world.holder.last_presentation
    b2 = Browser(world.idp)
    start = b2.follow(b2.get(f"{world.idp.url}/login/eid"))
    _waiting2, link2 = wallet_link(b2, start)
    replay = world.holder.answer(link2, presentation=old)
    assert replay.status_code == 400 and "nonce_mismatch" in replay.json()["error_description"]
    assert _count(world, EidLink) == 0  # the first answer was never completed by its browser


def test_demo_cli_wallet_answers_a_real_request(idp_factory: Any, tmp_path: Any, capsys: Any) -> None:
    """``python -m walletsim init`` writes what [wallet] needs; ``answer`` logs the citizen in."""
    from idp.config import WalletConfig
    from walletsim.__main__ import main as walletsim

    assert walletsim(["init", str(tmp_path / "sim"), "--host", "localhost"]) == 0
    sim = tmp_path / "sim"
    idp = idp_factory(
        host="localhost",
        wallet=WalletConfig(
            enabled=True,
            simulation=True,
            trust_anchors_file=str(sim / "pid-root.pem"),
            verifier_key_file=str(sim / "verifier.key"),
            verifier_cert_file=str(sim / "verifier.pem"),
        ),
    )
    idp.add_user(EMAIL)
    b = Browser(idp)
    page = b.login(EMAIL, PASSWORD, b.follow(b.get(f"{idp.url}/login")))
    _waiting, link = wallet_link(b, b.follow(b.get(f"{idp.url}/login/eid")))
    capsys.readouterr()
    assert walletsim(["answer", str(sim), link]) == 0
    status, _sp, body = capsys.readouterr().out.strip().partition(" ")
    assert status == "200", body
    done = b.follow(b.get(json.loads(body)["redirect_uri"]))
    assert done.status_code == 200 and done.url.endswith("/account"), (done.url, page.url)
    assert _count_links(idp) == 1


def _count_links(idp: Any) -> int:
    with transaction(idp.sessions()) as s:
        return int(s.execute(select(func.count()).select_from(EidLink)).scalar_one())


def test_wallet_error_response_is_a_clear_refusal(world: WalletWorld) -> None:
    """OpenID4VP 1.0 §8.5: the citizen declined in the wallet; the wallet posts an error."""
    b, waiting, link = _start(world)
    req = world.holder.fetch_request(link)
    answer = requests.post(
        req.claims["response_uri"], data={"error": "access_denied", "state": req.claims["state"]}, timeout=10
    )
    _assert_refused(world, b, waiting, answer, "wallet_declined")


def test_on_a_phone_the_wallet_opens_on_the_same_device(world: WalletWorld) -> None:
    world.idp.add_user(EMAIL)
    b = Browser(world.idp)
    b.http.headers["User-Agent"] = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Mobile/15E148"
    b.login(EMAIL, PASSWORD, b.follow(b.get(f"{world.idp.url}/login")))
    waiting, link = wallet_link(b, b.follow(b.get(f"{world.idp.url}/login/eid")))
    assert f'<a class="button" href="{link.replace("&", "&amp;")}"' in waiting.text
    assert "<img" not in waiting.text  # no QR code to scan with the phone itself


def test_cross_device_step_up_with_an_already_linked_wallet_needs_no_confirmation(world: WalletWorld) -> None:
    """The confirmation is for a first link only: the wallet linked to this account steps up
    through the QR code as before."""
    world.idp.add_user(EMAIL)
    rp = _rp(world)
    b = Browser(world.idp)
    page, _v = _to_eid_page(world, rp, b)
    _waiting, same = wallet_link(b, page)
    first = world.holder.answer(same)  # linked on the same device
    b.follow(b.get(first.json()["redirect_uri"]))
    assert _count(world, EidLink) == 1
    start = b.follow(b.get(f"{world.idp.url}/login/eid"))
    waiting, same = wallet_link(b, start)
    answer = world.holder.answer(same.replace("flow%3Dsame", "flow%3Dcross"))
    assert answer.status_code == 200, answer.text
    done = b.get(waiting.url)
    assert done.status_code == 303 and done.headers["Location"].startswith("/login/eid/complete?"), done.text[
        :300
    ]
    assert _confirm_audit(world) == []
