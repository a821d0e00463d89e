"""Every text goes through the catalogues, and German is complete.

A new page (step-up, devices, eID…) that adds a _() text without a German translation fails
here: run `make messages` and translate the new entries in
idp/translations/de/LC_MESSAGES/messages.po.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from tests.idp.conftest import Browser, csrf

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "idp" / "translations" / "{}" / "LC_MESSAGES" / "messages.po"
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def extracted() -> dict[str, list[str]]:
    """msgid -> files, extracted now from the source as `make messages` does."""
    with (ROOT / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    found: dict[str, list[str]] = {}
    for filename, _lineno, message, _comments, _context in extract_from_dir(
        str(ROOT),
        method_map,
        options_map,
        keywords={"_": None, "gettext": None, "ngettext": (1, 2), "_l": None, "lazy_gettext": None},
    ):
        # a plural (ngettext) is one catalogue entry, found by its singular id
        mid = message[0] if isinstance(message, tuple) else message
        if mid:
            found.setdefault(mid, []).append(filename)
    return found


def catalogue(lang: str) -> Catalog:
    with open(str(PO).format(lang), "rb") as f:
        return read_po(f, locale=lang)


def test_every_text_in_the_source_has_a_german_translation() -> None:
    de = catalogue("de")
    missing = []
    for mid, files in sorted(extracted().items()):
        msg = de.get(mid)
        strings = msg.string if msg is not None and isinstance(msg.string, tuple) else (msg and msg.string,)
        if msg is None or not all(strings) or msg.fuzzy:
            missing.append(f"{files[0]}: {mid!r}")
    assert not missing, (
        f"{len(missing)} text(s) without German translation. Run `make messages`, then translate "
        "them in idp/translations/de/LC_MESSAGES/messages.po:\n  " + "\n  ".join(missing)
    )


def test_english_catalogue_lists_every_text() -> None:
    en = catalogue("en")
    missing = [mid for mid in extracted() if en.get(mid) is None]
    assert not missing, f"run `make messages`; not in the en catalogue: {missing}"


def test_german_translations_keep_the_placeholders() -> None:
    for msg in catalogue("de"):
        if not msg.id or not msg.string:
            continue
        ids = msg.id if isinstance(msg.id, tuple) else (msg.id,)
        strings = msg.string if isinstance(msg.string, tuple) else (msg.string,)
        for text in strings:  # every plural form keeps the placeholders
            assert sorted(PLACEHOLDER.findall(str(ids[-1]))) == sorted(PLACEHOLDER.findall(str(text))), ids


def test_german_uses_the_formal_address() -> None:
    # Public administration addresses citizens with "Sie", never "du".
    informal = re.compile(r"\b(du|dich|dir|dein|deine|deinen|deinem|deiner)\b", re.IGNORECASE)
    for msg in catalogue("de"):
        if msg.id and msg.string:
            assert not informal.search(str(msg.string)), msg.string


# ----------------------------------------------------------------------------- rendered pages

ENGLISH = re.compile(r"\b(the|your|you|please|with|and|account|password|log in)\b", re.IGNORECASE)


def visible_text(html: str) -> str:
    html = re.sub(r"(?s)<(script|style|title)\b.*?</\1>", " ", html)
    html = re.sub(r'(?s)<[^>]+lang="en"[^>]*>.*?</a>', " ", html)  # the "English" switch
    return re.sub(r"<[^>]+>", " ", html)


def pages(idp: Any, lang: str) -> dict[str, str]:
    """The citizen pages, as a person with `lang` sees them."""
    b = Browser(idp)
    b.http.cookies.set("lang", lang)
    out = {}
    for path in ("/", "/login", "/register", "/forgot", "/reset?token=x", "/verify?token=x", "/nowhere"):
        out[path] = b.get(idp.url + path).text
    idp.add_user("lena@example.org")
    page = b.get(idp.url + "/login")
    b.login("lena@example.org", "correct horse battery staple", page)
    out["/account"] = b.get(idp.url + "/account").text
    out["/account/delete"] = b.get(idp.url + "/account/delete").text
    out["/account/email"] = b.get(idp.url + "/account/email").text
    out["/account/email/confirm"] = b.get(idp.url + "/account/email/confirm?token=x").text
    r = b.post(idp.url + "/account/delete", {"csrf_token": "forged"})
    out["csrf error"] = r.text
    r = b.post(idp.url + "/account/logout", {"csrf_token": csrf(out["/account"])})
    out["logged out"] = r.text
    return out


def test_german_pages_show_no_english(idp: Any) -> None:
    for path, html in pages(idp, "de").items():
        assert '<html lang="de">' in html, path
        text = visible_text(html).replace("lena@example.org", "")
        leftover = ENGLISH.findall(text)
        assert not leftover, f"{path}: English words {leftover} in: {' '.join(text.split())}"


def test_english_pages_are_english(idp: Any) -> None:
    for path, html in pages(idp, "en").items():
        assert '<html lang="en">' in html, path
        assert not re.search(r"\b(Sie|Ihre?|Konto|Passwort)\b", visible_text(html)), path


@pytest.mark.parametrize(
    ("headers", "query", "cookie", "expected"),
    [
        ({}, "", None, "de"),  # the city's language by default
        ({"Accept-Language": "en-GB,en;q=0.8"}, "", None, "en"),
        ({"Accept-Language": "fr"}, "", None, "de"),
        ({"Accept-Language": "en"}, "", "de", "de"),  # the remembered switch beats the browser
        ({"Accept-Language": "de"}, "?ui_locales=en", "de", "en"),  # OIDC Core §3.1.2.1 first
    ],
)
def test_language_is_chosen_ui_locales_cookie_accept_language(
    idp: Any, headers: dict[str, str], query: str, cookie: str | None, expected: str
) -> None:
    b = Browser(idp)
    if cookie:
        b.http.cookies.set("lang", cookie)
    r = b.get(idp.url + "/login" + query, headers=headers)
    assert f'<html lang="{expected}">' in r.text


def test_language_switch_remembers_and_returns_to_the_page(idp: Any) -> None:
    b = Browser(idp)
    r = b.get(idp.url + "/lang/en?next=/register")
    assert r.status_code == 302 and r.headers["Location"] == "/register"
    assert "Create an account" in b.get(idp.url + "/register").text
    r = b.get(idp.url + "/lang/de?next=https://evil.example/")
    assert r.headers["Location"] == "/"  # never an open redirect
    assert "Konto anlegen" in b.get(idp.url + "/register").text


def test_mail_is_sent_in_german(idp_factory: Any, smtp_server: Any) -> None:
    from idp.config import SmtpConfig

    inbox, port = smtp_server
    idp = idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=port))
    b = Browser(idp)
    page = b.get(idp.url + "/register")
    b.post(
        idp.url + "/register",
        {
            "csrf_token": csrf(page.text),
            "email": "mia@example.org",
            "password": "ein langer satz als passwort",
            "password2": "ein langer satz als passwort",
        },
    )
    msg = inbox.wait_for("mia@example.org")
    assert "Bestätigen Sie Ihre E-Mail-Adresse" in msg["Subject"]
    assert "indem Sie diesen Link öffnen" in msg.get_content()


def test_ui_locales_of_the_authorization_request_reach_the_login_page_oidc_core_3_1_2_1(idp: Any) -> None:
    from tests.idp.conftest import Browser, pkce_pair

    cid, _secret = idp.add_client(name="Svc", redirect_uris=["http://127.0.0.1:9/cb"])
    _v, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": cid,
        "redirect_uri": "http://127.0.0.1:9/cb",
        "scope": "openid",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "ui_locales": "en",
    }
    b = Browser(idp)
    page = b.follow(b.get(f"{idp.url}/authorize", params=params))
    assert 'lang="en"' in page.text and "Password" in page.text
