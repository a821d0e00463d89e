"""Hostile input that reached a 500 once (issue 18): each gets its protocol error instead."""

from __future__ import annotations

import base64

import pytest
import requests

from idp.config import LEVEL_HIGH
from tests.idp.conftest import PASSWORD, Browser, Idp, pkce_pair, query

REDIRECT = "http://127.0.0.1:9/cb"
# outside RFC 6749's error_description set (%x20-21 / %x23-5B / %x5D-7E)
BAD_CHARACTERS = ['"', "\u00fc", "x\t", "\\", "\u202e", "\x7f"]


def _authorize(idp: Idp, **params: str) -> requests.Response:
    return requests.get(f"{idp.url}/authorize", params=params, allow_redirects=False, timeout=10)


@pytest.mark.parametrize("bad", BAD_CHARACTERS)
def test_authorize_error_with_bad_characters_is_400_page_rfc6749_4_1_2_1(idp: Idp, bad: str) -> None:
    cid, _ = idp.add_client(name="Svc", redirect_uris=[REDIRECT])
    _, challenge = pkce_pair()
    base = {"client_id": cid, "scope": "openid", "code_challenge": challenge, "code_challenge_method": "S256"}
    # an unregistered redirect URI: a page, never a redirect to it (RFC 6749 §4.1.2.1)
    r = _authorize(idp, **base, response_type="code", redirect_uri=bad)
    assert r.status_code == 400 and "text/html" in r.headers["Content-Type"], r.text
    assert "Location" not in r.headers
    # a bad response_type with a valid redirect URI: redirected there, the description kept in
    # RFC 6749's character set
    r = _authorize(idp, **base, response_type=bad, redirect_uri=REDIRECT)
    assert r.status_code == 302, r.text
    location = r.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    answer = query(location)
    assert answer["error"] == "unsupported_response_type"
    assert _in_rfc6749_set(answer.get("error_description", "")), answer


@pytest.mark.parametrize("bad", BAD_CHARACTERS)
def test_par_error_with_bad_characters_is_json_invalid_request_rfc9126_2_3(idp: Idp, bad: str) -> None:
    cid, _ = idp.add_client(name="App", redirect_uris=[REDIRECT], auth_method="none")
    _, challenge = pkce_pair()
    r = requests.post(
        f"{idp.url}/par",
        data={
            "client_id": cid,
            "response_type": "code",
            "redirect_uri": bad,
            "scope": "openid",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        timeout=10,
    )
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "invalid_request"
    assert _in_rfc6749_set(body["error_description"]), body


def test_client_id_with_a_quote_and_a_minimum_level_is_refused_not_a_500_rfc6749_4_1_2_1(idp: Idp) -> None:
    # RFC 6749 §A.1: a client_id may hold '"' and '\\'; the refusal names it in its description
    cid, _ = idp.add_client(
        name="Quoted", redirect_uris=[REDIRECT], client_id='urn:x:"q"\\', min_level=LEVEL_HIGH
    )
    idp.add_user("eve@example.org")
    browser = Browser(idp)
    _, challenge = pkce_pair()
    params = {
        "client_id": cid,
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    r = browser.follow(browser.get(f"{idp.url}/authorize", params=params))
    r = browser.login("eve@example.org", PASSWORD, r)
    assert r.status_code in (302, 303), r.text
    location = r.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    answer = query(location)
    assert answer["error"] == "unmet_authentication_requirements", answer
    assert _in_rfc6749_set(answer["error_description"]) and "q" in answer["error_description"], answer


def _in_rfc6749_set(text: str) -> bool:
    return all(0x20 <= ord(c) <= 0x21 or 0x23 <= ord(c) <= 0x5B or 0x5D <= ord(c) <= 0x7E for c in text)


BIG_FORM = {"x": "a" * (1024 * 1024 + 1)}  # over MAX_CONTENT_LENGTH (1 MiB)


@pytest.mark.parametrize("path", ["/login", "/register", "/authorize"])
def test_body_over_1_mib_gets_the_413_page_not_a_500(idp: Idp, path: str) -> None:
    r = requests.post(f"{idp.url}{path}", data=BIG_FORM, allow_redirects=False, timeout=30)
    assert r.status_code == 413, r.text[:500]
    assert r.headers["Content-Type"].startswith("text/html")
    assert "Zu viele Daten" in r.text and 'href="/"' in r.text
    # ui_locales in the query still picks the language (OIDC Core §3.1.2.1)
    r = requests.post(f"{idp.url}{path}?ui_locales=en", data=BIG_FORM, allow_redirects=False, timeout=30)
    assert r.status_code == 413 and "Too much data" in r.text, r.text[:500]


def test_body_over_1_mib_at_an_unknown_path_gets_the_404_page_not_a_500(idp: Idp) -> None:
    r = requests.post(f"{idp.url}/no-such-page?ui_locales=en", data=BIG_FORM, timeout=30)
    assert r.status_code == 404 and "Page not found" in r.text, r.text[:500]


def test_body_over_1_mib_at_a_form_page_offers_the_way_back_to_the_form(idp: Idp) -> None:
    r = requests.post(f"{idp.url}/login?ui_locales=en", data=BIG_FORM, allow_redirects=False, timeout=30)
    assert r.status_code == 413
    assert 'href="/login"' in r.text and "Back to the form" in r.text
    r = requests.post(f"{idp.url}/register", data=BIG_FORM, allow_redirects=False, timeout=30)
    assert 'href="/register"' in r.text and "Zurück zum Formular" in r.text


@pytest.mark.parametrize("path", ["/par", "/api/smartcard/approve", "/token"])
def test_body_over_1_mib_at_an_api_is_a_json_413(idp: Idp, path: str) -> None:
    big = {"data": BIG_FORM} if path != "/api/smartcard/approve" else {"json": BIG_FORM}
    r = requests.post(f"{idp.url}{path}", **big, allow_redirects=False, timeout=30)  # type: ignore[arg-type]
    assert r.status_code == 413, r.text[:500]
    body = r.json()
    assert body["error"] == "invalid_request" and set(body) == {"error", "error_description"}
    assert _in_rfc6749_set(body["error_description"])


@pytest.mark.parametrize(
    "authorization",
    [
        b"Basic \xfc",
        b"Basic " + base64.b64encode(b"\xff\xfe:secret"),
        b"Basic " + base64.b64encode(b"x:\xff"),
    ],
    ids=["non-ascii", "id-not-utf8", "secret-not-utf8"],
)
@pytest.mark.parametrize("path", ["/par", "/introspect", "/revoke", "/token"])
def test_malformed_basic_credentials_are_invalid_client_not_a_500_rfc6749_2_3_1(
    idp: Idp, path: str, authorization: bytes
) -> None:
    r = requests.post(
        f"{idp.url}{path}",
        data={"token": "x", "grant_type": "client_credentials"},
        headers={"Authorization": authorization},  # type: ignore[dict-item]
        timeout=10,
    )
    assert r.status_code in (400, 401), r.text[:300]
    assert r.json()["error"] in ("invalid_client", "invalid_request"), r.text
