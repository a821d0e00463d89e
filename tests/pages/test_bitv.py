"""BITV 2.0 beyond axe: what an outside audit found (issue 17), proven over plain HTTP.

Each test names the WCAG 2.1 success criterion or BITV 2.0 clause it proves. The same items in
Chromium (accessibility tree, focus, live regions) are in tests/browser/test_bitv_browser.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from db import transaction, utcnow
from db.audit import AuditEvent
from idp import accounts, browser
from idp.config import BrandingConfig, SmtpConfig, branding_problem, contrast, load_config
from idp.models import EmailToken, LoginSession
from tests.idp.conftest import Browser, Idp, csrf
from tests.pages.helpers import PASSWORD, logged_in

CONTACT = "barrierefreiheit@musterstadt.example"


class Elements(HTMLParser):
    """The attributes of every element with an id, and the page's title and text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, str]] = {}
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.title = ""
        self._in_title = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v if v is not None else "") for k, v in attrs}
        self.tags.append((tag, a))
        if "id" in a:
            self.by_id[a["id"]] = {"tag": tag, **a}
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data

    def invalid(self) -> list[str]:
        return [i for i, a in self.by_id.items() if a.get("aria-invalid") == "true"]

    def autofocus(self) -> list[str]:
        return [i for i, a in self.by_id.items() if "autofocus" in a]

    def described_by(self, element_id: str) -> list[str]:
        return self.by_id[element_id].get("aria-describedby", "").split()


def fields_of(b: Browser, path: str, data: dict[str, str]) -> tuple[Any, Elements]:
    page = b.get(b.idp.url + path)
    r = b.post(b.idp.url + path, {"csrf_token": csrf(page.text), **data})
    return r, Elements(r.text)


# ----------------------------------------------------------------------------- 1 + 2: errors per field


def test_register_marks_only_the_field_in_error_wcag_3_3_1_and_4_1_2(idp: Idp) -> None:
    b = Browser(idp)
    r, el = fields_of(
        b, "/register", {"email": "anna@example.org", "password": PASSWORD, "password2": "something else"}
    )
    assert r.status_code == 400
    assert el.invalid() == ["password2"]  # the correct address and password are not marked
    assert el.described_by("password2") == ["password2-error"]
    assert "password2-error" in el.by_id and "Passwörter stimmen nicht überein" in r.text
    assert el.described_by("password") == ["password-hint"]  # its hint, no error
    assert "aria-describedby" not in el.by_id["email"] or el.described_by("email") == ["email-hint"]
    # WCAG 3.3.1: a summary at the top links to the field; 2.4.2 / 4.1.3: the title says so
    assert '<a href="#password2">' in r.text and "error-summary" in el.by_id
    assert el.title.startswith("Fehler: ")
    assert el.autofocus() == ["password2"]
    # the address entered stays (3.3.4 help), passwords never come back
    assert 'value="anna@example.org"' in r.text and PASSWORD not in r.text


def test_register_reports_every_field_in_error_at_once_in_page_order(idp: Idp) -> None:
    r, el = fields_of(
        Browser(idp), "/register", {"email": "anna@example", "password": PASSWORD, "password2": "other"}
    )
    assert r.status_code == 400 and el.invalid() == ["email", "password2"] and el.autofocus() == ["email"]
    assert r.text.index('<a href="#email">') < r.text.index('<a href="#password2">')


def test_register_with_a_bad_address_marks_the_address_only(idp: Idp) -> None:
    r, el = fields_of(
        Browser(idp), "/register", {"email": "anna@example", "password": PASSWORD, "password2": PASSWORD}
    )
    assert r.status_code == 400 and el.invalid() == ["email"] and el.autofocus() == ["email"]
    assert el.described_by("email") == ["email-error", "email-hint"]


def test_failed_login_marks_both_fields_with_one_message_that_names_neither(idp: Idp) -> None:
    idp.add_user("bert@example.org")
    r, el = fields_of(Browser(idp), "/login", {"email": "bert@example.org", "password": "wrong password"})
    assert r.status_code == 401
    assert sorted(el.invalid()) == ["email", "password"]
    assert el.described_by("email") == el.described_by("password") == ["form-error"]
    assert "email-error" not in el.by_id and "password-error" not in el.by_id
    assert el.autofocus() == ["email"] and el.title.startswith("Fehler: ")


def test_untick_on_account_deletion_marks_the_checkbox_not_the_password(idp: Idp) -> None:
    idp.add_user("carla@example.org")
    b, _ = logged_in(idp, "carla@example.org")
    r, el = fields_of(b, "/account/delete", {"password": PASSWORD})
    assert r.status_code == 400
    assert el.invalid() == ["confirm"] and el.described_by("confirm") == ["confirm-error"]
    assert el.described_by("password") == ["password-hint"]
    assert el.autofocus() == ["confirm"] and '<a href="#confirm">' in r.text
    # and a wrong password marks the password, not the ticked box
    r, el = fields_of(b, "/account/delete", {"password": "not my password", "confirm": "yes"})
    assert r.status_code == 401 and el.invalid() == ["password"]
    assert el.described_by("password") == ["password-error", "password-hint"]


def test_password_and_email_change_mark_the_field_in_error(idp: Idp) -> None:
    idp.add_user("dora@example.org")
    b, _ = logged_in(idp, "dora@example.org")
    data = {"current_password": PASSWORD, "password": "a new long passphrase", "password2": "another one"}
    r, el = fields_of(b, "/account/password", data)
    assert r.status_code == 400 and el.invalid() == ["password2"]
    data = {"current_password": "wrong one", "password": "a new passphrase", "password2": "a new passphrase"}
    r, el = fields_of(b, "/account/password", data)
    assert r.status_code == 401 and el.invalid() == ["current_password"]
    r, el = fields_of(b, "/account/email", {"email": "dora.neu@example.org", "password": "wrong one"})
    assert r.status_code == 401 and el.invalid() == ["password"] and el.autofocus() == ["password"]
    r, el = fields_of(b, "/account/email", {"email": "no address", "password": PASSWORD})
    assert r.status_code == 400 and el.invalid() == ["email"]


def test_pages_without_error_have_a_plain_title_and_no_autofocus(idp: Idp) -> None:
    el = Elements(Browser(idp).get(idp.url + "/register").text)
    assert not el.title.startswith("Fehler") and el.autofocus() == [] and el.invalid() == []


# ----------------------------------------------------------------------------- 4: time limits


def _session_row(idp: Idp) -> LoginSession:
    with transaction(idp.sessions()) as s:
        rows = list(s.execute(select(LoginSession)).scalars())
        assert len(rows) == 1
        s.expunge(rows[0])
        return rows[0]


def test_form_session_lasts_a_day_and_is_renewed_when_a_form_is_shown_wcag_2_2_1(idp: Idp) -> None:
    b = Browser(idp)
    r = b.get(idp.url + "/register")
    left = _session_row(idp).expires_at - utcnow()
    assert left >= dt.timedelta(hours=20)  # WCAG 2.2.1: at least 20 hours without warning
    assert re.search(r"Max-Age=(\d+)", r.headers["Set-Cookie"])[1] == str(24 * 3600)  # type: ignore[index]
    # opened late: 30 minutes left of the session; showing a form gives it a day again
    with transaction(idp.sessions()) as s:
        s.execute(update(LoginSession).values(expires_at=utcnow() + dt.timedelta(minutes=30)))
    r = b.get(idp.url + "/login")
    assert _session_row(idp).expires_at - utcnow() >= dt.timedelta(hours=23)
    assert "Max-Age=86400" in r.headers["Set-Cookie"]


def test_a_form_whose_session_expired_comes_back_with_the_values_but_no_password(idp: Idp) -> None:
    b = Browser(idp)
    page = b.get(idp.url + "/register")
    with transaction(idp.sessions()) as s:  # the session ran out while the citizen was typing
        s.execute(update(LoginSession).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    form = {"csrf_token": csrf(page.text), "email": "emil@example.org", "password": PASSWORD}
    r = b.post(idp.url + "/register", {**form, "password2": PASSWORD})
    assert r.status_code == 200
    assert 'value="emil@example.org"' in r.text and PASSWORD not in r.text
    assert "Formular war abgelaufen" in r.text and 'role="status"' in r.text
    with transaction(idp.sessions()) as s:
        reasons = list(
            s.execute(select(AuditEvent.reason).where(AuditEvent.action == "csrf.reject")).scalars()
        )
        assert reasons == ["form session expired"]
        assert s.execute(select(accounts.Account)).first() is None  # nothing registered meanwhile
    # sent again from the page it got, it goes through
    again = b.post(idp.url + "/register", {**form, "csrf_token": csrf(r.text), "password2": PASSWORD})
    assert again.status_code == 200 and "Postfach" in again.text


def test_an_expired_feedback_form_keeps_the_message(idp_factory: Any) -> None:
    idp = idp_factory(branding=BrandingConfig(accessibility_contact=CONTACT))
    b = Browser(idp)
    page = b.get(idp.url + "/barrierefreiheit")
    with transaction(idp.sessions()) as s:
        s.execute(update(LoginSession).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    r = b.post(idp.url + "/barrierefreiheit", {"csrf_token": csrf(page.text), "message": "Zu kleine Schrift"})
    assert r.status_code == 200 and ">Zu kleine Schrift</textarea>" in r.text and "abgelaufen" in r.text


def test_a_forged_token_without_any_session_is_not_the_expired_form_case(idp: Idp) -> None:
    # a missing token stays a plain refusal; only our own token of a gone session is shown again
    r = Browser(idp).post(idp.url + "/register", {"email": "x@example.org"})
    assert r.status_code == 400 and "Dieses Formular ist abgelaufen" in r.text
    assert "auth.register" in browser.FORM_REFILL


# ----------------------------------------------------------------------------- 5, 6, 7


def test_technical_details_are_marked_english_wcag_3_1_2(idp: Idp) -> None:
    for template in ("message.html", "eid_message.html"):
        text = (Path(__file__).resolve().parents[2] / "idp" / "templates" / template).read_text()
        assert '<code lang="en">{{ detail }}</code>' in text, template


def test_security_keys_page_is_linked_from_my_account_wcag_2_4_5(idp: Idp) -> None:
    idp.add_user("fritz@example.org")
    _b, page = logged_in(idp, "fritz@example.org")
    assert 'href="/account/security-keys"' in page


def test_eid_simulator_inputs_are_text_fields_and_the_other_person_belongs_to_its_radio(
    idp_factory: Any,
) -> None:
    idp = idp_factory(eid_connector="simulator", eid_simulator_enabled=True)
    idp.add_user("gina@example.org")
    b, _ = logged_in(idp, "gina@example.org")
    page = b.follow(b.get(idp.url + "/login/eid"))
    if "/login/eid/simulator" not in page.url:
        start = re.search(r'<form method="post" action="([^"]+)"', page.text)
        assert start, page.text
        page = b.follow(b.post(idp.url + start[1], {"csrf_token": csrf(page.text)}))
    assert "persona" in page.text, page.text
    el = Elements(page.text)
    for name in ("pseudonym", "given_name", "family_name", "birthdate", "place_of_birth", "nationality"):
        assert el.by_id[name]["type"] == "text", name
    assert el.by_id["persona-custom"]["aria-controls"] == "someone-else"
    assert el.by_id["someone-else"]["tag"] == "fieldset"
    # nested in the persons' fieldset right after its radio button
    ids = [a.get("id") for _t, a in el.tags if a.get("id")]
    assert ids.index("someone-else") == ids.index("persona-custom") + 1
    # the levels are words of the page's language, not untranslated English
    assert ">hoch</option>" in page.text and ">high</option>" not in page.text


# ----------------------------------------------------------------------------- 8: the city colour


@pytest.mark.parametrize(
    ("colour", "problem"),
    [
        ("#004b87", None),
        ("#1a1a1a", None),  # dark: text fine, the yellow focus ring shows on it
        ("#0a7cff", "1.4.3"),  # 4.0:1 against white text
        ("#ffcc00", "1.4.3"),
        ("#767676", "1.4.11"),  # 4.54:1 for text, but the focus ring on it has 2.77:1
        ("#777777", "1.4.3"),  # 4.48:1
        ("#8b0000", None),
        ("red", "hex colour"),
    ],
)
def test_city_colour_needs_contrast_for_text_and_focus_ring_wcag_1_4_3_and_1_4_11(
    colour: str, problem: str | None
) -> None:
    found = branding_problem(BrandingConfig(primary_colour=colour), "http://127.0.0.1:8000")
    if problem is None:
        assert found is None, found
    else:
        assert found is not None and "branding.primary_colour" in found and problem in found


def test_contrast_is_computed_as_wcag_2_1_defines_it() -> None:
    assert round(contrast("#000000", "#ffffff"), 2) == 21.0
    assert round(contrast("#767676", "#ffffff"), 2) == 4.54  # the well-known AA grey
    assert round(contrast("#004b87", "#ffbf47"), 2) >= 3.0


def test_serve_refuses_a_pale_city_colour_with_exit_2_naming_the_setting(tmp_path: Path) -> None:
    from cli import main as cli_main

    (tmp_path / "cityid.toml").write_text(
        'issuer = "http://127.0.0.1:8000"\nsecret_key = "'
        + "s" * 40
        + '"\nkey_passphrase = "'
        + "k" * 40
        + '"\n[branding]\nprimary_colour = "#3399ff"\n',
        encoding="utf-8",
    )
    r = CliRunner().invoke(cli_main, ["serve", "--data-dir", str(tmp_path)])
    assert r.exit_code == 2 and "branding.primary_colour" in r.output, r.output


def test_the_stylesheets_focus_colour_is_the_one_checked() -> None:
    css = (Path(__file__).resolve().parents[2] / "idp" / "static" / "cityid.css").read_text()
    from idp.config import FOCUS_COLOUR

    assert f"--focus: {FOCUS_COLOUR};" in css


# ----------------------------------------------------------------------------- 9: dead links


def _token(idp: Idp, email: str, purpose: str, **kw: Any) -> str:
    with transaction(idp.sessions()) as s:
        acct = accounts.find_by_email(s, idp.keys, email)
        assert acct is not None
        return accounts.issue_email_token(s, idp.keys, acct, purpose, dt.timedelta(minutes=30), **kw)


def test_unknown_reset_and_change_links_say_so_when_opened(idp: Idp) -> None:
    idp.add_user("hans@example.org")
    b, _ = logged_in(idp, "hans@example.org")
    for path in ("/reset?token=unknown", "/account/email/confirm?token=unknown"):
        r = b.get(idp.url + path)
        assert r.status_code == 400 and "Link ist nicht gültig" in r.text, path
        assert 'name="password"' not in r.text and 'name="token"' not in r.text, path


def test_opening_a_valid_link_does_not_spend_it(idp: Idp) -> None:
    idp.add_user("ida@example.org")
    token = _token(idp, "ida@example.org", "reset")
    b = Browser(idp)
    for _ in range(2):  # a mail scanner, then the citizen
        page = b.get(f"{idp.url}/reset?token={token}")
        assert page.status_code == 200 and 'name="password"' in page.text
    with transaction(idp.sessions()) as s:
        assert s.execute(select(EmailToken.used_at)).scalar_one() is None
    new = "a fresh long passphrase"
    r = b.post(
        idp.url + "/reset", {"csrf_token": csrf(page.text), "token": token, "password": new, "password2": new}
    )
    assert r.status_code == 200 and "Passwort geändert" in r.text
    change = _token(idp, "ida@example.org", accounts.EMAIL_CHANGE, new_email="ida.neu@example.org")
    page = b.get(f"{idp.url}/account/email/confirm?token={change}")
    assert page.status_code == 200 and 'name="token"' in page.text


# ----------------------------------------------------------------------------- statement, LS, DGS


def test_every_page_links_the_accessibility_statement_in_its_footer_bitv_7(idp: Idp) -> None:
    b = Browser(idp)
    for path in ("/", "/login", "/register", "/forgot", "/nowhere", "/barrierefreiheit", "/leichte-sprache"):
        r = b.get(idp.url + path)
        footer = r.text.split('<footer class="site">', 1)[1]
        assert 'href="/barrierefreiheit"' in footer, path


def test_start_page_links_to_leichte_sprache_and_sign_language_bitv_4(idp: Idp) -> None:
    main = Browser(idp).get(idp.url + "/").text.split("<main", 1)[1].split("</main>", 1)[0]
    assert 'href="/leichte-sprache"' in main and 'href="/gebaerdensprache"' in main


def test_leichte_sprache_page_explains_account_login_and_help_in_short_sentences(idp: Idp) -> None:
    r = Browser(idp).get(idp.url + "/leichte-sprache")
    assert r.status_code == 200
    main = r.text.split("<main", 1)[1].split("</main>", 1)[0]
    for heading in ("Was ist das Bürger·konto?", "Wie melden Sie sich an?", "Wo bekommen Sie Hilfe?"):
        assert heading in main
    assert "Ein Pass·wort ist ein geheimes Wort." in main  # a hard word explained
    sentences = [
        s.strip()
        for p in re.findall(r"<p>([^<]+)", main)
        for s in re.split(r"(?<=[.?!:])\s+", p)
        if s.strip()
    ]
    assert len(sentences) > 25
    # Leichte Sprache: short sentences (rule of thumb: no more than 12 words), no commas
    long = [s for s in sentences if len(s.split()) > 12 or "," in s]
    assert not long, long


def test_statement_names_the_arbitration_body_and_offers_the_form(idp_factory: Any) -> None:
    idp = idp_factory(
        branding=BrandingConfig(accessibility_contact=CONTACT, accessibility_statement_date="2026-11-30")
    )
    r = Browser(idp).get(idp.url + "/barrierefreiheit")
    assert r.status_code == 200
    assert 'href="https://www.schlichtungsstelle-bgg.de"' in r.text  # BITV 2.0 §7 (1) 3
    assert f'href="mailto:{CONTACT}"' in r.text and 'action="/barrierefreiheit"' in r.text
    assert "30. November 2026" in r.text


def _feedback_idp(idp_factory: Any, smtp_server: Any) -> tuple[Idp, Any]:
    inbox, port = smtp_server
    idp = idp_factory(
        smtp=SmtpConfig(host="127.0.0.1", port=port), branding=BrandingConfig(accessibility_contact=CONTACT)
    )
    return idp, inbox


def test_feedback_reaches_the_city_by_mail_and_is_audited_bitv_7(idp_factory: Any, smtp_server: Any) -> None:
    idp, inbox = _feedback_idp(idp_factory, smtp_server)
    b = Browser(idp)
    r, _el = fields_of(
        b,
        "/barrierefreiheit",
        {
            "message": "Der Knopf „Anmelden“ ist mit dem Screenreader stumm.",
            "page": "/login",
            "email": "jo@example.org",
        },
    )
    assert r.status_code == 200 and "Vielen Dank" in r.text
    mail = inbox.wait_for(CONTACT)
    body = mail.get_content()
    assert "Screenreader stumm" in body and "jo@example.org" in body and "/login" in body
    with transaction(idp.sessions()) as s:
        entry = s.execute(
            select(AuditEvent).where(AuditEvent.action == "accessibility.feedback")
        ).scalar_one()
        assert entry.outcome == "success" and "stumm" not in entry.details  # no message text in the log


def test_feedback_errors_are_per_field_and_nothing_is_sent(idp_factory: Any, smtp_server: Any) -> None:
    idp, inbox = _feedback_idp(idp_factory, smtp_server)
    b = Browser(idp)
    r, el = fields_of(b, "/barrierefreiheit", {"message": "  ", "email": "not an address", "page": "/x"})
    assert r.status_code == 400 and el.invalid() == ["message", "email"] and el.autofocus() == ["message"]
    assert 'value="/x"' in r.text and el.title.startswith("Fehler: ")
    r = b.post(idp.url + "/barrierefreiheit", {"message": "no token"})  # CSRF
    assert r.status_code == 400
    assert inbox.messages == []


def test_feedback_is_throttled_and_keeps_what_was_written(idp_factory: Any, smtp_server: Any) -> None:
    idp, inbox = _feedback_idp(idp_factory, smtp_server)
    b = Browser(idp)
    for i in range(3):
        r, _el = fields_of(b, "/barrierefreiheit", {"message": f"Meldung {i}"})
        assert r.status_code == 200
    r, el = fields_of(b, "/barrierefreiheit", {"message": "Meldung 4"})
    assert r.status_code == 429 and "Meldung 4" in r.text and CONTACT in r.text
    assert el.invalid() == ["message"]
    with transaction(idp.sessions()) as s:
        outcomes = list(
            s.execute(
                select(AuditEvent.outcome)
                .where(AuditEvent.action == "accessibility.feedback")
                .order_by(AuditEvent.seq)
            ).scalars()
        )
    assert outcomes == ["success"] * 3 + ["denied"]
    with inbox.cond:
        assert inbox.cond.wait_for(lambda: len(inbox.messages) >= 3, 10)
    time.sleep(0.5)  # nothing more arrives
    assert len(inbox.messages) == 3


def test_videos_come_from_the_city_with_their_transcript(idp_factory: Any, tmp_path: Path) -> None:
    video = tmp_path / "dgs.webm"
    video.write_bytes(b"\x1a\x45\xdf\xa3" + b"\0" * 2000)
    transcript = tmp_path / "dgs.txt"
    transcript.write_text("Hallo. Das ist das Bürgerkonto.\n\nSo melden Sie sich an.", encoding="utf-8")
    idp = idp_factory(
        branding=BrandingConfig(
            sign_language_video=str(video),
            sign_language_transcript_file=str(transcript),
            easy_language_video="https://media.musterstadt.example/ls.mp4",
            easy_language_transcript_file=str(transcript),
        )
    )
    b = Browser(idp)
    r = b.get(idp.url + "/gebaerdensprache")
    assert r.status_code == 200 and 'src="/gebaerdensprache/video"' in r.text and 'lang="gsg"' in r.text
    assert "<p>So melden Sie sich an.</p>" in r.text
    part = b.get(idp.url + "/gebaerdensprache/video", headers={"Range": "bytes=0-3"})
    assert part.status_code == 206 and part.content == b"\x1a\x45\xdf\xa3"
    assert part.headers["Content-Type"] == "video/webm"
    r = b.get(idp.url + "/leichte-sprache")
    assert 'src="https://media.musterstadt.example/ls.mp4"' in r.text
    assert "media-src 'self' https://media.musterstadt.example" in r.headers["Content-Security-Policy"]
    assert b.get(idp.url + "/leichte-sprache/video").status_code == 404  # a URL is not served here


@pytest.mark.parametrize(
    ("branding", "named"),
    [
        ({"sign_language_video": "https://v.example/dgs.mp4"}, "sign_language_transcript_file"),
        (
            {"sign_language_video": "http://v.example/dgs.mp4", "sign_language_transcript_file": "x"},
            "https://",
        ),
        (
            {"easy_language_video": "/nonexistent.mp4", "easy_language_transcript_file": "x"},
            "easy_language_video",
        ),
        ({"accessibility_contact": "nobody"}, "accessibility_contact"),
        ({"accessibility_statement_date": "30.11.2026"}, "accessibility_statement_date"),
        ({"easy_language_file": "/nonexistent.txt"}, "easy_language_file"),
        ({"arbitration_url": "javascript:alert(1)"}, "arbitration_url"),
    ],
)
def test_accessibility_settings_are_checked_at_start(branding: dict[str, str], named: str) -> None:
    found = branding_problem(BrandingConfig(**branding), "http://127.0.0.1:8000")
    assert found is not None and named in found, found


def test_a_public_issuer_needs_the_feedback_address(tmp_path: Path) -> None:
    cfg = load_config(tmp_path)
    public = dataclasses.replace(cfg, issuer="https://login.musterstadt.de")
    found = branding_problem(public.branding, public.issuer)
    assert found is not None and "branding.accessibility_contact" in found
    with_contact = dataclasses.replace(public.branding, accessibility_contact=CONTACT)
    assert branding_problem(with_contact, public.issuer) is None
