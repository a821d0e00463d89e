"""Citizen pages: register, verify e-mail, log in, forgot/reset password, language."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, redirect, render_template, request, url_for
from flask_babel import get_locale, ngettext
from flask_babel import gettext as _
from sqlalchemy import select

from db import utcnow
from idp import accounts, browser, throttle, uow
from idp.crypto import verify_password
from idp.forms import FormErrors, field_error, form_error
from idp.i18n import DEFAULT, LOCALES
from idp.insights import funnel
from idp.instance import normalise_email
from idp.models import Account, Client, EmailToken
from idp.oauth.server import query_client
from idp.runtime import runtime
from idp.views.account import (
    claim_attempt,
    end_account_sessions,
    mail_account,
    notify_password_changed,
    password_context,
    password_problem,
    settle_attempt,
)
from idp.views.oidc import finish_after_login

bp = Blueprint("auth", __name__)

MAX_FIELD = 1024


def _field(name: str) -> str:
    value = request.form.get(name, "")
    return value[: MAX_FIELD + 1]


def _too_long(*names: str) -> FormErrors:
    """The fields over ``MAX_FIELD`` characters, each with its own message (empty: none)."""
    errors = FormErrors()
    for n in names:
        if len(request.form.get(n, "")) > MAX_FIELD:
            errors.add(n, _("This entry is too long."))
    return errors


def _keys() -> Any:
    return runtime().keys


def _pending_client() -> Client | None:
    """The service the login page names (its name, its logo): the client's row, read once per
    request with the authorization's own reads (``query_client``), no ORM object."""
    s = browser.current()
    cid = request.args.get("client_id", "")[:64]
    if s is not None and s.pending and cid:
        client = query_client(cid)
        return client.row if client is not None else None
    return None


def continue_url() -> str:
    """Where to go after a completed login step: the pending authorization, else the account."""
    return _continue_url()


def complete_step(factor: str, level: int | None, *, method: str, platform: str = "") -> Any:
    """Record a completed step-up factor (``hwk``, ``eid``) and continue the authorization.

    The session id is rotated (OWASP session management: renew on privilege change).
    """
    account = browser.current_account()
    if account is None:
        return redirect("/login")
    target = _continue_url()
    s = browser.log_in(account, factor, level)
    funnel.step(
        funnel.STEPUP, "done", method=method, level_reached=funnel.level_name(level), platform=platform
    )
    uow.record(
        action=f"login.{method}",
        outcome="success",
        actor=account.id,
        subject=account.id,
        reason=f"factor {factor} level {level}",
    )
    del s
    return redirect(target)


def _continue_url() -> str:
    s = browser.current()
    if s is not None and s.pending:
        url = str(json.loads(s.pending).get("url", "/account"))
        # only ever a local path: never an open redirect
        parts = urlsplit(url)
        if not parts.scheme and not parts.netloc and url.startswith("/"):
            return url
    return "/account"


# One link per address and purpose per minute at most: the forms cannot be used to flood a
# citizen's mailbox or our mail server's reputation. The page answers the same either way.
RESEND_INTERVAL = dt.timedelta(seconds=60)


def link_sent_recently(account: Any, purpose: str, lifetime: dt.timedelta) -> bool:
    # A link issued at t expires at t + lifetime: issued within the interval <=> expires after this.
    cutoff = utcnow() + lifetime - RESEND_INTERVAL
    q = select(EmailToken.token_digest).where(
        EmailToken.account_id == account.id,
        EmailToken.purpose == purpose,
        EmailToken.used_at.is_(None),
        EmailToken.expires_at > cutoff,
    )
    return uow.db().execute(q.limit(1)).first() is not None


def _send_link(account: Any, purpose: str, lifetime: dt.timedelta, *, registering: bool = False) -> None:
    """Mail a single-use link to the account's own address (never to an address as typed: two
    spellings that reach the same account must not reach two mailboxes)."""
    if link_sent_recently(account, purpose, lifetime):
        uow.record(
            action="mail.suppressed",
            outcome="info",
            actor="anonymous",
            subject=account.id,
            reason=f"{purpose} link sent less than {int(RESEND_INTERVAL.total_seconds())} s ago",
        )
        return
    token = accounts.issue_email_token(uow.db(), _keys(), account, purpose, lifetime)
    cfg = runtime().config
    city = cfg.branding.city_name
    if purpose == "verify":
        link = f"{cfg.issuer}/verify?token={token}"
        subject = _("Confirm your e-mail address for %(city)s", city=city)
        body = _(
            "Please confirm your e-mail address by opening this link:\n\n%(link)s\n\n"
            "The link is valid for %(hours)s hours and can be used once. If you did not "
            "register, ignore this message.",
            link=link,
            hours=cfg.email_verification_hours,
        )
    elif registering:
        link = f"{cfg.issuer}/reset?token={token}"
        subject = _("Finish your registration for %(city)s", city=city)
        body = _(
            "Someone asked to register an account with this e-mail address. To finish the "
            "registration, choose your password with this link:\n\n%(link)s\n\nThe link is valid "
            "for %(minutes)s minutes and can be used once. If it was not you, ignore this message.",
            link=link,
            minutes=cfg.password_reset_minutes,
        )
    else:
        link = f"{cfg.issuer}/reset?token={token}"
        subject = _("Reset your password for %(city)s", city=city)
        body = _(
            "Someone asked to reset the password of your account. To choose a new "
            "password, open this link:\n\n%(link)s\n\nThe link is valid for %(minutes)s "
            "minutes and can be used once. If it was not you, ignore this message.",
            link=link,
            minutes=cfg.password_reset_minutes,
        )
    mail_account(account, subject, body)


@bp.route("/register", methods=["GET", "POST"])
def register() -> Any:
    if request.method == "GET":
        return render_template("register.html", csrf_token=browser.csrf_token())
    browser.check_csrf()
    if too_long := _too_long("email", "password", "password2"):
        return render_template("register.html", csrf_token=browser.csrf_token(), errors=too_long), 400
    email, password = normalise_email(_field("email")), _field("password")
    # every field in error at once, each with its own message (WCAG 3.3.1); the address's form
    # only: whether it is taken is never told (below)
    errors = FormErrors()
    try:
        accounts.checked_email(email)
    except accounts.InvalidEmail:
        errors.add("email", _("Please enter a valid e-mail address."))
    if password != _field("password2"):
        errors.add("password2", _("The two passwords do not match."))
    if errors:
        return render_template(
            "register.html", csrf_token=browser.csrf_token(), email=email, errors=errors
        ), 400
    try:
        acct = accounts.create_account(
            uow.db(),
            _keys(),
            email,
            password,
            locale=str(get_locale() or DEFAULT),  # the language of the pages it was registered on
            actor="self",
            context=password_context(email),
        )
        _send_link(acct, "verify", dt.timedelta(hours=runtime().config.email_verification_hours))
    except accounts.InvalidEmail:
        errors = field_error("email", _("Please enter a valid e-mail address."))
    except accounts.WeakPassword as exc:
        errors = field_error("password", password_problem(exc))
    except accounts.EmailTaken:
        # No account enumeration: the page says the same. An unconfirmed account may have been
        # registered by someone else to take the address over once its owner confirms it
        # (account pre-hijacking): its confirmation links are cancelled, and the mailbox's owner
        # gets a link to choose the password (which confirms the address and ends all sessions).
        existing = accounts.find_by_email(uow.db(), _keys(), email, lock=True)
        if existing is not None and existing.email_verified_at is None:
            accounts.cancel_links(uow.db(), existing.id, ("verify",))
            _send_link(
                existing,
                "reset",
                dt.timedelta(minutes=runtime().config.password_reset_minutes),
                registering=True,
            )
        uow.record(
            action="account.register_existing",
            outcome="info",
            actor="anonymous",
            subject=existing.id if existing else "",
            reason="address already registered",
        )
        return render_template(
            "message.html",
            title=_("Check your inbox"),
            status="ok",
            message=_("We have sent you an e-mail. Open the link in it to confirm your address."),
        )
    else:
        return render_template(
            "message.html",
            title=_("Check your inbox"),
            status="ok",
            message=_("We have sent you an e-mail. Open the link in it to confirm your address."),
        )
    return render_template("register.html", csrf_token=browser.csrf_token(), email=email, errors=errors), 400


@bp.route("/verify", methods=["GET", "POST"])
def verify() -> Any:
    """GET shows a button, POST confirms: mail gateways open the links in mails they scan, and
    such a visit must neither use the link up nor confirm an address its owner never saw."""
    token = request.values.get("token", "")[:200]

    def form(errors: FormErrors | None = None) -> Any:
        return render_template(
            "link_confirm.html",  # mail scanners open links; only the button confirms
            title=_("Confirm your e-mail address"),
            message=_("Enter the password you chose at registration to confirm this e-mail address."),
            action="/verify",
            csrf_token=browser.csrf_token(),
            token=token,
            ask_password=True,
            errors=errors,
        )

    try:
        row = accounts.check_email_token(uow.db(), _keys(), token, "verify")
        if request.method == "GET":
            return form()
        browser.check_csrf()
        # The link proves the mailbox, the password proves who registered: someone who registered
        # another person's address first cannot have it confirmed for him by its owner's click
        # (account pre-hijacking). The link stays usable after a wrong password.
        owner = uow.db().get(Account, row.account_id)
        # the link's holder guesses no more often than at /login: the same count per address
        attempt = claim_attempt(owner.email_index) if owner is not None else None
        if isinstance(attempt, throttle.Blocked):  # NIST SP 800-63B §5.2.2
            uow.record(
                action="email.verify",
                outcome="denied",
                actor="anonymous",
                subject=row.account_id,
                reason=f"throttled after {attempt.failures} failures",
            )
            return form(field_error("password", _held(attempt, utcnow()))), 429
        hashed = owner.password_hash if owner is not None else None
        right = verify_password(hashed, _field("password")[: accounts.MAX_PASSWORD])
        if owner is not None and attempt is not None:
            settle_attempt(attempt, owner.email_index, right=right, account_id=owner.id)
        if not right:
            uow.record(
                action="email.verify",
                outcome="denied",
                actor="anonymous",
                subject=row.account_id,
                reason="wrong password",
            )
            return form(
                field_error(
                    "password",
                    _(
                        "This is not the password chosen at registration. If you did not register with "
                        "this address, or forgot the password, choose a new one with “Forgot your password?”."
                    ),
                )
            ), 400
        acct = accounts.consume_email_token(uow.db(), _keys(), token, "verify")
    except accounts.InvalidLink as exc:
        uow.record(action="email.verify", outcome="denied", actor="anonymous", subject="", reason=str(exc))
        return render_template(
            "message.html",
            title=_("This link is not valid"),
            status="error",
            message=_("The link is unknown, expired or was already used. You can log in or register again."),
        ), 400
    accounts.mark_email_verified(acct)
    uow.record(
        action="email.verify",
        outcome="success",
        actor=acct.id,
        subject=acct.id,
        reason="link followed",
    )
    return render_template(
        "message.html",
        title=_("E-mail address confirmed"),
        status="ok",
        message=_("Thank you. You can now log in."),
        link="/login",
        link_text=_("Log in"),
    )


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    client = _pending_client()
    if request.method == "GET":
        funnel.step(funnel.LOGIN_PAGE, "shown")
        return render_template("login.html", csrf_token=browser.csrf_token(), client=client)
    browser.check_csrf()
    email, password = _field("email"), _field("password")
    if too_long := _too_long("email", "password"):
        return render_template(
            "login.html", csrf_token=browser.csrf_token(), client=client, email=email, errors=too_long
        ), 400
    now = utcnow()
    index = _keys().email_lookup(email) if len(email) <= 254 else None
    attempt = claim_attempt(index) if index else None  # counted before the password is checked
    if isinstance(attempt, throttle.Blocked):  # NIST SP 800-63B §5.2.2: the password is not checked
        uow.record(
            action="login.password",
            outcome="denied",
            actor="anonymous",
            subject="",
            reason=f"throttled after {attempt.failures} failures",
        )
        held = form_error(_held(attempt, now), "email")  # about the address, not the password
        return render_template(
            "login.html", csrf_token=browser.csrf_token(), client=client, email=email, errors=held
        ), 429
    outcome = accounts.check_login(uow.db(), _keys(), email, password)
    named = outcome.account.id if outcome.account else ""  # the account the address names
    right = outcome.reason != "bad_credentials"  # unverified or disabled: the password was right
    if attempt is not None and index:
        settle_attempt(attempt, index, right=right, account_id=named)
    if outcome.reason != "ok":
        funnel.step(funnel.FIRST_FACTOR, "failed", method="password")
        uow.record(
            action="login.password",
            outcome="denied",
            actor=named if right else "anonymous",  # a wrong password: someone, not the citizen
            subject=named,  # shown in the citizen's security log (ASVS V7.2.1)
            reason=outcome.reason,
        )
        if outcome.reason == "unverified":
            errors = form_error(
                _("Please confirm your e-mail address first: open the link we sent you."), "email"
            )
        else:
            # both fields: the message must not say which of the two is wrong (no enumeration)
            errors = form_error(_("E-mail address or password is wrong."), "email", "password")
        return render_template(
            "login.html", csrf_token=browser.csrf_token(), client=client, email=email, errors=errors
        ), 401
    assert outcome.account is not None
    target = _continue_url()
    browser.log_in(outcome.account, "pwd")
    funnel.step(funnel.FIRST_FACTOR, "ok", method="password", level_reached="low")
    uow.record(
        action="login.password",
        outcome="success",
        actor=outcome.account.id,
        subject=outcome.account.id,
        reason="password verified",
    )
    # OIDC Core §3.1.2.5: nothing else missing (no further factor, consent given), the login POST
    # answers with the code at once instead of sending the browser back to /authorize first
    finished = finish_after_login()
    if finished is not None:
        return finished
    return redirect(target)


def _held(held: throttle.Blocked, now: dt.datetime) -> str:
    if held.until_reset:
        return str(
            _(
                "This e-mail address is blocked after too many wrong passwords. "
                "Please choose a new password with “Forgot your password?”."
            )
        )
    minutes = max(1, -(-int((held.until - now).total_seconds()) // 60))
    return str(
        ngettext(
            "Too many wrong passwords for this e-mail address. Please try again in %(num)s minute, "
            "or choose a new password with “Forgot your password?”.",
            "Too many wrong passwords for this e-mail address. Please try again in %(num)s minutes, "
            "or choose a new password with “Forgot your password?”.",
            minutes,
        )
    )


@bp.route("/forgot", methods=["GET", "POST"])
def forgot() -> Any:
    if request.method == "GET":
        return render_template("forgot.html", csrf_token=browser.csrf_token())
    browser.check_csrf()
    email = _field("email")
    acct = accounts.find_by_email(uow.db(), _keys(), email, lock=True) if len(email) <= 254 else None
    if acct is not None and not acct.disabled:
        _send_link(acct, "reset", dt.timedelta(minutes=runtime().config.password_reset_minutes))
    uow.record(
        action="password.reset_request",
        outcome="info",
        actor="anonymous",
        subject=acct.id if acct else "",
        reason="sent" if acct else "unknown address",
    )
    # Same answer for known and unknown addresses: no account enumeration.
    return render_template(
        "message.html",
        title=_("Check your inbox"),
        status="ok",
        message=_(
            "If an account exists for this address, we have sent an "
            "e-mail with a link to choose a new password."
        ),
    )


@bp.route("/reset", methods=["GET", "POST"])
def reset() -> Any:
    token = request.values.get("token", "")[:200]
    if request.method == "GET":
        # A dead link says so at once, not after the citizen chose a password (the link is only
        # looked at here, not used up: mail scanners open links too)
        try:
            accounts.check_email_token(uow.db(), _keys(), token, "reset")
        except accounts.InvalidLink as exc:
            return _invalid_reset_link(str(exc))
        return render_template("reset.html", csrf_token=browser.csrf_token(), token=token)
    browser.check_csrf()
    password = _field("password")
    if password != _field("password2"):
        return render_template(
            "reset.html",
            csrf_token=browser.csrf_token(),
            token=token,
            errors=field_error("password2", _("The two passwords do not match.")),
        ), 400
    try:
        # A refused password answers 400: the unit of work rolls the link's use back with it
        acct = accounts.consume_email_token(uow.db(), _keys(), token, "reset")
        accounts.set_password(uow.db(), acct, password, password_context(accounts.email_of(_keys(), acct)))
    except accounts.WeakPassword as exc:
        return render_template(
            "reset.html",
            csrf_token=browser.csrf_token(),
            token=token,
            errors=field_error("password", password_problem(exc)),
        ), 400
    except accounts.InvalidLink as exc:
        return _invalid_reset_link(str(exc))
    accounts.mark_email_verified(acct)  # the link proved control of the address
    # Whoever knew the old password is logged out everywhere, at the services too (OWASP).
    ended = end_account_sessions(acct.id, "password reset")
    uow.record(
        action="password.reset",
        outcome="success",
        actor=acct.id,
        subject=acct.id,
        reason="new password set",
        details={"sessions_ended": ended.sessions, "grants_revoked": ended.grants},
    )
    notify_password_changed(acct)
    return render_template(
        "message.html",
        title=_("Password changed"),
        status="ok",
        message=_("You can now log in with your new password."),
        link="/login",
        link_text=_("Log in"),
    )


def _invalid_reset_link(reason: str) -> Any:
    uow.record(action="password.reset", outcome="denied", actor="anonymous", subject="", reason=reason)
    return render_template(
        "message.html",
        title=_("This link is not valid"),
        status="error",
        message=_("The link is unknown, expired or was already used. You can ask for a new one."),
        link="/forgot",
        link_text=_("Forgot password"),
    ), 400


@bp.get("/lang/<lang>")
def switch_language(lang: str) -> Any:
    """Remember the language choice (a preference cookie, no account state)."""
    if lang not in LOCALES:
        lang = DEFAULT
    back = request.args.get("next", "/")
    parts = urlsplit(back)
    if parts.scheme or parts.netloc or not back.startswith("/") or back.startswith("//"):
        back = "/"
    resp = redirect(back)
    resp.set_cookie("lang", lang, max_age=365 * 86400, path="/", samesite="Lax", httponly=True)
    return resp


@bp.get("/")
def index() -> Any:
    if browser.current_account() is not None:
        return redirect(url_for("account.home"))
    return render_template("index.html")


@bp.get("/favicon.ico")
def favicon() -> Any:
    """The icon browsers ask for on their own (idp.favicon), in the city's colour."""
    from flask import current_app

    from idp.favicon import ico

    body = current_app.extensions.get("cityid_favicon")
    if body is None:
        body = current_app.extensions["cityid_favicon"] = ico(runtime().config.branding.primary_colour)
    return body, 200, {"Content-Type": "image/x-icon", "Cache-Control": "public, max-age=86400"}


@bp.get("/branding.css")
def branding_css() -> Any:
    """City colours from config, as a stylesheet (CSP forbids inline styles)."""
    import re

    colour = runtime().config.branding.primary_colour
    if not re.fullmatch(r"#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?", colour):
        colour = "#004b87"
    return (
        f":root {{ --primary: {colour}; }}\n",
        200,
        {"Content-Type": "text/css; charset=utf-8", "Cache-Control": "public, max-age=300"},
    )


# Forms shown again with what was entered when their session had expired (WCAG 2.1 2.2.1);
# passwords are never sent back (idp.app drops every field named *password*).
def _refill(template: str, **names: str) -> Callable[[Mapping[str, str]], Any]:
    def render(values: Mapping[str, str]) -> Any:
        kept = {var: values.get(field, "") for var, field in names.items()}
        return render_template(template, csrf_token=browser.csrf_token(), form_expired=True, **kept)

    return render


def _refill_verify(values: Mapping[str, str]) -> Any:
    return render_template(
        "link_confirm.html",
        title=_("Confirm your e-mail address"),
        message=_("Enter the password you chose at registration to confirm this e-mail address."),
        action="/verify",
        csrf_token=browser.csrf_token(),
        token=values.get("token", "")[:200],
        ask_password=True,
        form_expired=True,
    )


browser.FORM_REFILL.update(
    {
        "auth.register": _refill("register.html", email="email"),
        "auth.login": _refill("login.html", email="email"),
        "auth.forgot": _refill("forgot.html", email="email"),
        "auth.reset": _refill("reset.html", token="token"),
        "auth.verify": _refill_verify,
    }
)
