"""RFC 9470 end to end: a resource server that needs *high*, a client following its step-up
challenge, and cityid stepping the citizen's session up from a password to the eID."""

from __future__ import annotations

import threading

import requests
from werkzeug.serving import make_server

from examples.rfc9470.client import StepUpClient, parse_challenge
from examples.rfc9470.resource_server import create_app
from idp.config import LEVEL_HIGH
from tests.conftest import SERVER_POLL_SECONDS
from tests.idp.conftest import Browser, Idp, free_port
from tests.stepup.conftest import walk


def test_insufficient_user_authentication_challenge_leads_to_step_up_rfc9470_3_4(eid_idp: Idp) -> None:
    eid_idp.add_user("anna@example.org")
    cid, secret = eid_idp.add_client(name="Bauamt", redirect_uris=["http://127.0.0.1:9/cb"])
    assert secret
    port = free_port()
    rs = make_server("127.0.0.1", port, create_app(eid_idp.url, cid, required_acr=LEVEL_HIGH, max_age=300))
    threading.Thread(target=rs.serve_forever, args=(SERVER_POLL_SECONDS,), daemon=True).start()
    browser = Browser(eid_idp)
    journeys: list[list[str]] = []

    def user_agent(url: str) -> str:
        steps, page = walk(browser, browser.follow(browser.get(url)), "anna@example.org")
        journeys.append(steps)
        return str(page.headers["Location"])

    try:
        client = StepUpClient(eid_idp.url, cid, secret, "http://127.0.0.1:9/cb", user_agent)
        client.authorize()  # the usual login: password, acr low
        first = requests.get(
            f"http://127.0.0.1:{port}/permits",
            headers={"Authorization": f"Bearer {client.access_token}"},
            timeout=10,
        )
        assert first.status_code == 401
        challenge = parse_challenge(first.headers["WWW-Authenticate"])
        assert challenge["error"] == "insufficient_user_authentication"
        assert challenge["acr_values"] == LEVEL_HIGH and challenge["max_age"] == "300"

        resp = client.get(f"http://127.0.0.1:{port}/permits")
        assert resp.status_code == 200, resp.text
        assert resp.json()["acr"] == LEVEL_HIGH
        assert client.step_ups == 1
        # The password login first; then only the eID: stepped up, never restarted.
        assert journeys == [["/login"], ["/login/eid"]]
    finally:
        rs.shutdown()


def test_challenge_without_a_way_to_high_ends_in_refusal_not_a_loop(idp: Idp) -> None:
    """Without an eID connector cityid cannot reach high; the client gets a low token again
    (acr_values are voluntary) and the resource server keeps refusing: one retry, no loop."""
    idp.add_user("anna@example.org")
    cid, secret = idp.add_client(name="Bauamt", redirect_uris=["http://127.0.0.1:9/cb"])
    assert secret
    port = free_port()
    rs = make_server("127.0.0.1", port, create_app(idp.url, cid, required_acr=LEVEL_HIGH))
    threading.Thread(target=rs.serve_forever, args=(SERVER_POLL_SECONDS,), daemon=True).start()
    browser = Browser(idp)

    def user_agent(url: str) -> str:
        _steps, page = walk(browser, browser.follow(browser.get(url)), "anna@example.org")
        return str(page.headers["Location"])

    try:
        client = StepUpClient(idp.url, cid, secret, "http://127.0.0.1:9/cb", user_agent)
        resp = client.get(f"http://127.0.0.1:{port}/permits")
        assert resp.status_code == 401 and client.step_ups == 1
        assert parse_challenge(resp.headers["WWW-Authenticate"])["acr_values"] == LEVEL_HIGH
    finally:
        rs.shutdown()
