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
        keywords={
            "_": None,
            "gettext": None,
            "ngettext": (1, 2),
            "_l": None,
            "lazy_gettext": None,
            "N_": None,
        },
    ):
        # a plural (ngettext) is one catalogue entry, found by its singular id
        mid = message[0] if isinstance(message, tuple) else message
        if mid:
            found.setdefault(mid, []).append(filename)
    return found


def catalogue(lang: str) -> Catalog:
    with open(str(PO).format(lang), "rb") as f:
        return read_po(f, locale=lang)


# Catalogues that must translate every text (English is the msgid language: its catalogue only
# lists them). A new catalogue is added here, in idp/i18n.py LANGUAGES and in the Makefile.
TRANSLATED = ("de", "tr", "ar", "uk")
NAMES = {"de": "German", "tr": "Turkish", "ar": "Arabic", "uk": "Ukrainian"}
# CLDR plural categories as gettext Plural-Forms (Unicode CLDR plurals; GNU gettext manual §12.6)
NPLURALS = {"de": 2, "en": 2, "tr": 2, "ar": 6, "uk": 3}


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_text_in_the_source_is_translated_in_every_catalogue(lang: str) -> None:
    cat = catalogue(lang)
    missing = []
    for mid, files in sorted(extracted().items()):
        msg = cat.get(mid)
        strings = msg.string if msg is not None and isinstance(msg.string, tuple) else (msg and msg.string,)
        if msg is None or not all(strings) or msg.fuzzy:
            missing.append(f"{files[0]}: {mid!r}")
    assert not missing, (
        f"{len(missing)} text(s) without {NAMES[lang]} translation. Add them (msgid and translated "
        f"msgstr) to idp/translations/{lang}/LC_MESSAGES/messages.po:\n  " + "\n  ".join(missing)
    )


def test_english_catalogue_lists_every_text() -> None:
    en = catalogue("en")
    missing = [mid for mid in extracted() if en.get(mid) is None]
    assert not missing, f"run `make messages`; not in the en catalogue: {missing}"


def test_every_catalogue_is_a_supported_language_and_the_makefile_knows_it() -> None:
    from idp.i18n import LOCALES

    on_disk = {p.parts[-3] for p in ROOT.glob("idp/translations/*/LC_MESSAGES/messages.po")}
    assert on_disk == set(LOCALES) == set(TRANSLATED) | {"en"}
    makefile = (ROOT / "Makefile").read_text()
    dirs = re.search(r"^LOCALE_DIRS := (.*)$", makefile, re.MULTILINE)
    assert dirs and set(dirs.group(1).split()) == set(LOCALES)


@pytest.mark.parametrize("lang", ("en", *TRANSLATED))
def test_translations_keep_the_placeholders(lang: str) -> None:
    for msg in catalogue(lang):
        if not msg.id or not msg.string:
            continue
        ids = msg.id if isinstance(msg.id, tuple) else (msg.id,)
        strings = msg.string if isinstance(msg.string, tuple) else (msg.string,)
        for text in strings:  # every plural form keeps the placeholders
            if text:
                assert sorted(PLACEHOLDER.findall(str(ids[-1]))) == sorted(PLACEHOLDER.findall(str(text))), (
                    lang,
                    ids,
                )


@pytest.mark.parametrize("lang", ("en", *TRANSLATED))
def test_plural_forms_header_follows_cldr(lang: str) -> None:
    cat = catalogue(lang)
    assert cat.num_plurals == NPLURALS[lang], cat.plural_forms
    for msg in cat:
        if msg.id and isinstance(msg.id, tuple) and lang != "en":
            assert len(msg.string) == NPLURALS[lang], msg.id


@pytest.mark.parametrize("lang", ("tr", "ar", "uk"))
def test_catalogue_header_says_whether_a_native_speaker_reviewed_it(lang: str) -> None:
    # docs/languages.md: machine-assisted catalogues say so until a native speaker signs them off
    header = str(PO).format(lang)
    text = Path(header).read_text(encoding="utf-8")
    status = re.search(r'^"X-Review-Status: (.*)\\n"$', text, re.MULTILINE)
    assert status, f"{lang}: no X-Review-Status header"
    assert status.group(1) == "machine-assisted, not yet reviewed by a native speaker" or status.group(
        1
    ).startswith("reviewed by a native speaker"), status.group(1)


INFORMAL = {
    # Public administration addresses citizens formally: "Sie", "siz", "Ви" (capitalised in
    # Ukrainian official letters), never the informal pronouns.
    "de": re.compile(r"\b(du|dich|dir|dein|deine|deinen|deinem|deiner)\b", re.IGNORECASE),
    "tr": re.compile(r"(?<!\w)(sen|seni|sana|senin|sende|senden)(?!\w)", re.IGNORECASE),
    "uk": re.compile(
        r"(?<!\w)(ти|тебе|тобі|тобою|твій|твоя|твоє|твої|твого|твоєї|вас|ваш|ваша|ваше|ваші|вам|ви)(?!\w)"
    ),
}


@pytest.mark.parametrize("lang", sorted(INFORMAL))
def test_citizens_are_addressed_formally(lang: str) -> None:
    for msg in catalogue(lang):
        strings = msg.string if isinstance(msg.string, tuple) else (msg.string,)
        for text in strings:
            if msg.id and text:
                assert not INFORMAL[lang].search(str(text)), (lang, text)


# ----------------------------------------------------------------------------- rendered pages

ENGLISH = re.compile(r"\b(the|your|you|please|with|and|account|password|log in)\b", re.IGNORECASE)
GERMAN = re.compile(r"\b(Sie|Ihre?|Konto|Passwort|und|mit|Bitte)\b")


def visible_text(html: str) -> str:
    html = re.sub(r"(?s)<(script|style|title)\b.*?</\1>", " ", html)
    html = re.sub(r'(?s)<nav class="lang".*?</nav>', " ", html)  # each language in its own name
    return re.sub(r"<[^>]+>", " ", html)


def html_tag(html: str) -> tuple[str, str] | None:
    m = re.search(r'<html lang="([a-z]+)" dir="(ltr|rtl)">', html)
    return (m.group(1), m.group(2)) if m else None


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
        assert html_tag(html) == ("de", "ltr"), path
        text = visible_text(html).replace("lena@example.org", "")
        leftover = ENGLISH.findall(text)
        assert not leftover, f"{path}: English words {leftover} in: {' '.join(text.split())}"


def test_english_pages_are_english(idp: Any) -> None:
    for path, html in pages(idp, "en").items():
        assert html_tag(html) == ("en", "ltr"), path
        assert not GERMAN.search(visible_text(html)), path


@pytest.mark.parametrize(("lang", "direction"), [("tr", "ltr"), ("ar", "rtl"), ("uk", "ltr")])
def test_turkish_arabic_ukrainian_pages_show_neither_english_nor_german(
    idp: Any, lang: str, direction: str
) -> None:
    for path, html in pages(idp, lang).items():
        assert html_tag(html) == (lang, direction), path
        text = visible_text(html).replace("lena@example.org", "")
        leftover = ENGLISH.findall(text) + GERMAN.findall(text)
        assert not leftover, f"{path}: {leftover} in: {' '.join(text.split())}"


def test_arabic_keeps_e_mail_addresses_codes_and_dates_left_to_right(idp: Any) -> None:
    html = pages(idp, "ar")["/account"]
    assert '<bdi dir="ltr" class="email">lena@example.org</bdi>' in html
    assert re.search(r"<bdi><time datetime=", html)  # dates isolated from the RTL text around them


def test_language_switch_names_each_language_in_itself_with_its_lang(idp: Any) -> None:
    html = Browser(idp).get(idp.url + "/login").text
    nav = re.search(r'(?s)<nav class="lang" aria-label="([^"]+)">(.*?)</nav>', html)
    assert nav and nav.group(1) == "Sprache"
    link = r'<a href="/lang/(\w+)\?next=[^"]*" lang="(\w+)" hreflang="(\w+)" dir="(\w+)"([^>]*)>([^<]+)</a>'
    links = re.findall(link, nav.group(2))
    assert [(code, name) for code, _l, _h, _d, _c, name in links] == [
        ("de", "Deutsch"),
        ("en", "English"),
        ("tr", "Türkçe"),
        ("ar", "العربية"),
        ("uk", "Українська"),
    ]
    assert all(code == lang == href for code, lang, href, *_ in links)
    assert [d for _c, _l, _h, d, _x, _n in links] == ["ltr", "ltr", "ltr", "rtl", "ltr"]
    assert [c for c, _l, _h, _d, cur, _n in links if "aria-current" in cur] == ["de"]


@pytest.mark.parametrize(
    ("headers", "query", "cookie", "expected"),
    [
        ({}, "", None, "de"),  # the city's language by default
        ({"Accept-Language": "en-GB,en;q=0.8"}, "", None, "en"),
        ({"Accept-Language": "fr"}, "", None, "de"),
        ({"Accept-Language": "tr-TR,tr;q=0.9,de;q=0.5"}, "", None, "tr"),
        ({"Accept-Language": "ar-SY"}, "", None, "ar"),
        ({"Accept-Language": "fr, uk;q=0.8, en;q=0.5"}, "", None, "uk"),
        ({"Accept-Language": "en"}, "", "de", "de"),  # the remembered switch beats the browser
        ({"Accept-Language": "de"}, "?ui_locales=en", None, "en"),  # OIDC Core §3.1.2.1 over the browser
        ({}, "?ui_locales=fr-CA%20uk-UA%20en", None, "uk"),  # the first one supported, by primary subtag
        ({"Accept-Language": "tr"}, "?ui_locales=ar", "uk", "uk"),  # the citizen's own choice first
        ({}, "?ui_locales=xx", "nonsense", "de"),
    ],
)
def test_language_is_chosen_cookie_then_ui_locales_then_accept_language(
    idp: Any, headers: dict[str, str], query: str, cookie: str | None, expected: str
) -> None:
    b = Browser(idp)
    if cookie:
        b.http.cookies.set("lang", cookie)
    r = b.get(idp.url + "/login" + query, headers=headers)
    assert html_tag(r.text) == (expected, "rtl" if expected == "ar" else "ltr")


def test_language_switch_remembers_and_returns_to_the_page(idp: Any) -> None:
    b = Browser(idp)
    r = b.get(idp.url + "/lang/en?next=/register")
    assert r.status_code == 302 and r.headers["Location"] == "/register"
    assert "Create an account" in b.get(idp.url + "/register").text
    r = b.get(idp.url + "/lang/de?next=https://evil.example/")
    assert r.headers["Location"] == "/"  # never an open redirect
    assert "Konto anlegen" in b.get(idp.url + "/register").text
    b.get(idp.url + "/lang/ar?next=/register")
    assert html_tag(b.get(idp.url + "/register").text) == ("ar", "rtl")
    b.get(idp.url + "/lang/xx?next=/register")  # an unknown language: the city's
    assert html_tag(b.get(idp.url + "/register").text) == ("de", "ltr")


@pytest.mark.parametrize(
    ("lang", "subject", "body"),
    [
        ("de", "Bestätigen Sie Ihre E-Mail-Adresse", "indem Sie diesen Link öffnen"),
        ("tr", "e-posta adresinizi onaylayın", "Lütfen bu bağlantıyı açarak"),
        ("ar", "أكّد عنوان بريدك الإلكتروني", "يرجى تأكيد عنوان بريدك الإلكتروني"),
    ],
)
def test_mail_is_sent_in_the_language_of_the_pages(
    idp_factory: Any, smtp_server: Any, lang: str, subject: str, body: str
) -> None:
    from idp.config import SmtpConfig

    inbox, port = smtp_server
    idp = idp_factory(smtp=SmtpConfig(host="127.0.0.1", port=port))
    b = Browser(idp)
    if lang != "de":
        b.get(idp.url + f"/lang/{lang}")
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
    assert subject in msg["Subject"]
    assert body in msg.get_content()


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


# ----------------------------------------------------------------------------- ID token `locale`

REDIRECT = "http://127.0.0.1:9/cb"


def _id_token_locale(
    idp: Any, b: Browser, cid: str, secret: str, *, pushed: bool = False, **extra: str
) -> str:
    """Log in through the pages with browser `b` and return the ID token's `locale` claim."""
    import base64
    import json

    import requests

    from tests.idp.conftest import pkce_pair, query

    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": cid,
        "redirect_uri": REDIRECT,
        "scope": "openid profile",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "nonce": "n-1",
        **extra,
    }
    if pushed:  # RFC 9126: the browser's URL carries only the request_uri
        r = requests.post(f"{idp.url}/par", auth=(cid, secret), data=params, timeout=10)
        assert r.status_code == 201, r.text
        params = {"client_id": cid, "request_uri": r.json()["request_uri"]}
    page = b.follow(b.get(f"{idp.url}/authorize", params=params))
    seen = [html_tag(page.text)]
    page = b.login("lena@example.org", "correct horse battery staple", page)
    if page.status_code == 200 and 'name="decision"' in page.text:
        seen.append(html_tag(page.text))
        page = b.consent(page)
    assert page.status_code == 302 and page.headers["Location"].startswith(REDIRECT), page.text
    assert len(set(seen)) == 1, f"the pages changed language during the login: {seen}"
    tok = requests.post(
        f"{idp.url}/token",
        auth=(cid, secret),
        data={
            "grant_type": "authorization_code",
            "code": query(page.headers["Location"])["code"],
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        timeout=10,
    )
    assert tok.status_code == 200, tok.text
    payload = tok.json()["id_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    seen_lang = seen[0][0] if seen[0] else None
    assert claims["locale"] == seen_lang, (claims["locale"], seen)
    return str(claims["locale"])


@pytest.mark.parametrize(
    ("accept_language", "cookie", "extra", "pushed", "expected"),
    [
        ("en-GB,en;q=0.9", None, {}, False, "en"),  # issue 18: said "de" after the English pages
        ("de", None, {"ui_locales": "ar"}, False, "ar"),
        ("de", None, {"ui_locales": "uk"}, True, "uk"),  # a pushed request's ui_locales (RFC 9126)
        ("ar", "tr", {"ui_locales": "en"}, False, "tr"),  # the citizen's switch beats both
        (None, None, {}, False, "de"),
    ],
)
def test_id_token_locale_is_the_language_of_the_pages_the_citizen_logged_in_with_oidc_core_5_1(
    idp: Any,
    accept_language: str | None,
    cookie: str | None,
    extra: dict[str, str],
    pushed: bool,
    expected: str,
) -> None:
    cid, secret = idp.add_client(name="Svc", redirect_uris=[REDIRECT])
    idp.add_user("lena@example.org")  # registered by the city: stored locale "de"
    b = Browser(idp)
    if accept_language:
        b.http.headers["Accept-Language"] = accept_language
    if cookie:
        b.http.cookies.set("lang", cookie)
    assert _id_token_locale(idp, b, cid, secret or "", pushed=pushed, **extra) == expected


def test_id_token_locale_follows_the_language_used_at_the_latest_login(idp: Any) -> None:
    cid, secret = idp.add_client(name="Svc", redirect_uris=[REDIRECT])
    idp.add_user("lena@example.org")
    b = Browser(idp)
    b.http.cookies.set("lang", "uk")
    assert _id_token_locale(idp, b, cid, secret or "") == "uk"
    b2 = Browser(idp)  # another day, another browser, in Turkish
    b2.http.headers["Accept-Language"] = "tr"
    assert _id_token_locale(idp, b2, cid, secret or "") == "tr"


def test_pages_of_a_waiting_authorization_request_keep_its_ui_locales_oidc_core_3_1_2_1(idp: Any) -> None:
    # A step the citizen reaches without ui_locales in the URL (the return from the eID service,
    # a bookmark of /login) is still in the language the service asked for.
    from tests.idp.conftest import pkce_pair

    cid, _secret = idp.add_client(name="Svc", redirect_uris=[REDIRECT])
    _v, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": cid,
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "ui_locales": "ar",
    }
    b = Browser(idp)
    assert html_tag(b.follow(b.get(f"{idp.url}/authorize", params=params)).text) == ("ar", "rtl")
    assert html_tag(b.get(f"{idp.url}/login").text) == ("ar", "rtl")
    other = Browser(idp)  # another browser has no such request waiting
    assert html_tag(other.get(f"{idp.url}/login").text) == ("de", "ltr")


def test_stylesheet_uses_logical_properties_so_that_arabic_mirrors() -> None:
    # docs/languages.md: start/end (margin-inline, padding-inline-start, border-inline-start,
    # inset-inline-start, text-align: start), never left/right, or an RTL page is not mirrored.
    # The one exception: [dir=rtl] rules that put left-to-right fields at the right edge.
    physical = re.compile(
        r"\b(margin|padding|border|inset)-(left|right)\b|(?<![-\w])(left|right)\s*:|"
        r"text-align\s*:\s*(left|right)|float\s*:\s*(left|right)|clear\s*:\s*(left|right)"
    )
    css = (ROOT / "idp" / "static" / "cityid.css").read_text()
    css = re.sub(r"(?s)/\*.*?\*/", "", css)
    # a four-value margin/padding with different right and left values is physical too
    four = re.compile(
        r"(?<![-\w])(margin|padding)\s*:\s*([^\s;]+)\s+([^\s;]+)\s+([^\s;]+)\s+([^\s;]+)\s*[;}]"
    )
    found = [
        line.strip()
        for line in css.splitlines()
        if not line.startswith("[dir=rtl]")
        and (physical.search(line) or any(m.group(3) != m.group(5) for m in four.finditer(line)))
    ]
    assert not found, f"physical left/right in idp/static/cityid.css (use logical properties): {found}"


def test_logout_page_honours_ui_locales_rp_initiated_logout_2(idp: Any) -> None:
    # OpenID Connect RP-Initiated Logout 1.0 §2: ui_locales of the logout request
    r = Browser(idp).get(f"{idp.url}/logout", params={"ui_locales": "uk-UA"})
    assert r.status_code == 200 and html_tag(r.text) == ("uk", "ltr")


def test_discovery_lists_the_languages_of_the_pages_oidc_discovery_3(idp: Any) -> None:
    import requests

    meta = requests.get(f"{idp.url}/.well-known/openid-configuration", timeout=10).json()
    assert meta["ui_locales_supported"] == ["de", "en", "tr", "ar", "uk"]
