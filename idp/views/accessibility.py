"""Accessibility statement, Leichte Sprache and German Sign Language (BITV 2.0 §§ 4, 7).

- ``/barrierefreiheit``: the accessibility statement (*Erklärung zur Barrierefreiheit*, BITV 2.0
  §7 with the EU model statement of Implementing Decision (EU) 2018/1523): how accessible the
  pages are, what is not yet, when this was assessed, a feedback form that reaches the city
  (``[branding] accessibility_contact``, through the mail outbox), and the arbitration body
  (*Schlichtungsstelle*, BGG §16 or the state's) for the enforcement procedure.
- ``/leichte-sprache`` and ``/gebaerdensprache``: explanations in Leichte Sprache and in German
  Sign Language (BITV 2.0 §4, Anlage 2), linked from the start page; their text and video come
  from ``[branding]`` (a video is the city's file or an https URL, always with its transcript).

Every page links to the statement in its footer (``base.html``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from babel.dates import format_date
from flask import Blueprint, abort, render_template, request, send_file
from flask_babel import force_locale, get_locale
from flask_babel import gettext as _
from sqlalchemy import func, select

from db import utcnow
from db.audit import AuditEvent
from idp import accounts, browser, uow
from idp.config import VIDEO_SUFFIXES
from idp.forms import FormErrors
from idp.mail import send_after_commit
from idp.runtime import runtime

bp = Blueprint("accessibility", __name__)

STATEMENT_PATH = "/barrierefreiheit"
MAX_MESSAGE = 5000
MAX_PAGE = 500
MAX_EMAIL = 254
# The form reaches a person's mailbox: it must not be a way to flood it. Instance-wide, counted
# in the audit log (every process sees the same count); above either limit the page keeps what
# was entered and names the address to write to instead.
FEEDBACK_LIMITS = ((dt.timedelta(minutes=1), 3), (dt.timedelta(hours=1), 30))
VIDEOS = {"leichte-sprache": "easy_language", "gebaerdensprache": "sign_language"}


def _paragraphs(path: str) -> list[str]:
    """A plain-text file of the city's, as paragraphs (separated by blank lines)."""
    if not path:
        return []
    text = Path(path).read_text(encoding="utf-8")
    return [" ".join(p.split()) for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]


def _video(kind: str) -> dict[str, Any] | None:
    """The video of a page (``easy_language`` / ``sign_language``): where it plays from, its
    transcript."""
    b = runtime().config.branding
    source = getattr(b, f"{kind}_video")
    if not source:
        return None
    page = next(p for p, k in VIDEOS.items() if k == kind)
    url = source if "://" in source else f"/{page}/video"
    mime = VIDEO_SUFFIXES.get(Path(source).suffix.lower(), "")
    return {"url": url, "type": mime, "transcript": _paragraphs(getattr(b, f"{kind}_transcript_file"))}


def _statement(
    errors: FormErrors | None = None, values: Mapping[str, str] | None = None, **extra: Any
) -> str:
    b = runtime().config.branding
    date = None
    if b.accessibility_statement_date:
        day = dt.date.fromisoformat(b.accessibility_statement_date)
        date = format_date(day, "long", locale=str(get_locale() or "de"))
    return render_template(
        "accessibility.html",
        csrf_token=browser.csrf_token(),
        contact=b.accessibility_contact,
        statement_date=date,
        city_text=_paragraphs(b.accessibility_statement_file),
        site=urlsplit(runtime().config.issuer).netloc,  # the issuer, never the request's Host
        errors=errors,
        values=values or {},
        **extra,
    )


@bp.get(STATEMENT_PATH)
def statement() -> Any:
    return _statement(values={"page": request.args.get("page", "")[:MAX_PAGE]})


def _limited() -> bool:
    now = utcnow()
    for window, most in FEEDBACK_LIMITS:
        sent = uow.db().execute(
            select(func.count())
            .select_from(AuditEvent)
            .where(
                AuditEvent.action == "accessibility.feedback",
                AuditEvent.outcome == "success",
                AuditEvent.at > now - window,
            )
        )
        if int(sent.scalar_one()) >= most:
            return True
    return False


def _check(values: Mapping[str, str]) -> FormErrors:
    errors = FormErrors()
    if not values["message"].strip():
        errors.add("message", _("Please describe the barrier you found."))
    elif len(values["message"]) > MAX_MESSAGE:
        errors.add("message", _("Please shorten your message to %(n)s characters.", n=MAX_MESSAGE))
    if len(values["page"]) > MAX_PAGE:
        errors.add("page", _("This entry is too long."))
    if values["email"]:
        try:
            accounts.checked_email(values["email"][: MAX_EMAIL + 1])
            if len(values["email"]) > MAX_EMAIL:
                raise accounts.InvalidEmail("too long")
        except accounts.InvalidEmail:
            errors.add("email", _("Please enter a valid e-mail address, or leave the field empty."))
    return errors


@bp.post(STATEMENT_PATH)
def feedback() -> Any:
    """The feedback mechanism of BITV 2.0 §7 (1) 2: the message reaches the city by mail."""
    browser.check_csrf()
    contact = runtime().config.branding.accessibility_contact
    if not contact:  # development only: `cityid serve` refuses a public issuer without one
        abort(404)
    values = {k: request.form.get(k, "")[: MAX_MESSAGE + 1] for k in ("message", "page", "email")}
    errors = _check(values)
    if errors:
        return _statement(errors, values), 400
    account = browser.current_account()
    who = account.id if account is not None else "anonymous"
    if _limited():
        uow.record(
            action="accessibility.feedback",
            outcome="denied",
            actor=who,
            subject="",
            reason="too many messages through the form just now",
        )
        held = FormErrors(
            form=_(
                "Many messages have been sent through this form just now. Please try again in a few "
                "minutes, or write an e-mail to %(address)s.",
                address=contact,
            ),
            marked=("message",),
        )
        return _statement(held, values), 429
    language = request.accept_languages.best or ""
    with force_locale("de"):  # the city's staff read it: in the city's language
        subject = _("Accessibility feedback on the city account")
        body = _(
            "Someone reported a barrier through the feedback form of the accessibility statement "
            "(BITV 2.0 §7). Please answer within a month.\n\nPage: %(page)s\nReply to: %(email)s\n"
            "Language of the pages: %(lang)s\n\nMessage:\n%(message)s",
            page=values["page"] or "–",
            email=values["email"] or "–",
            lang=request.cookies.get("lang", "") or language[:20] or "–",
            message=values["message"],
        )
    send_after_commit(contact, subject, body)
    uow.record(
        action="accessibility.feedback",
        outcome="success",
        actor=who,
        subject="",
        reason="feedback sent to the city's accessibility contact",
        details={"reply_wanted": bool(values["email"]), "characters": len(values["message"])},
    )
    return render_template(
        "message.html",
        title=_("Thank you for your message"),
        status="ok",
        message=_(
            "Your message has been sent to %(city)s. If you gave your e-mail address, you will get "
            "an answer, usually within a month.",
            city=runtime().config.branding.city_name,
        ),
        link=STATEMENT_PATH,
        link_text=_("Back to the accessibility statement"),
    )


@bp.get("/leichte-sprache")
def easy_language() -> Any:
    b = runtime().config.branding
    return render_template(
        "easy_language.html",
        city_text=_paragraphs(b.easy_language_file),
        video=_video("easy_language"),
        contact=b.accessibility_contact,
    )


@bp.get("/gebaerdensprache")
def sign_language() -> Any:
    b = runtime().config.branding
    return render_template(
        "sign_language.html", video=_video("sign_language"), contact=b.accessibility_contact
    )


@bp.get('/<any("leichte-sprache", "gebaerdensprache"):page>/video')
def video_file(page: str) -> Any:
    """The city's video file (``[branding] *_video`` as a path); a URL is played from its site."""
    source = getattr(runtime().config.branding, f"{VIDEOS[page]}_video")
    if not source or "://" in source:
        abort(404)
    mime = VIDEO_SUFFIXES.get(Path(source).suffix.lower())
    if mime is None:
        abort(404)
    # conditional: byte ranges (RFC 9110 §14), so that players can seek
    return send_file(Path(source).resolve(), mimetype=mime, conditional=True, max_age=3600)


def _refill(values: Mapping[str, str]) -> Any:
    return _statement(values=values, form_expired=True)


browser.FORM_REFILL["accessibility.feedback"] = _refill
