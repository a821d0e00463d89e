"""My account: profile, consents given (with withdraw), security log, logout.

Other areas add their own pages (devices, eID link) to the account page through
``ACCOUNT_LINKS``: callables ``() -> (url, label) | None``, asked at each render (a hook returns
None to hide its link, e.g. when its feature is switched off).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from flask import Blueprint, redirect, render_template, request
from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy import select

from db import transaction, utcnow
from idp import accounts, browser, levels, throttle, uow
from idp.crypto import verify_password
from idp.forms import FormErrors, field_error
from idp.mail import send_after_commit
from idp.models import Account, Client, Consent
from idp.oauth import backchannel
from idp.privacy import audit_entries
from idp.runtime import runtime

bp = Blueprint("account", __name__)

ACCOUNT_LINKS: list[Callable[[], tuple[str, str] | None]] = []
SECURITY_LOG_SIZE = 20
# Steps inside a flow, not something the citizen did or needs to see in the security log.
BOOKKEEPING = frozenset(
    {
        "authorize.step",
        "authorize.error",
        "csrf.reject",
        "token.issue",
        "token.refuse",
        "resource.refuse",
        "logout.backchannel",
        "smartcard.challenge",
        "smartcard.login_challenge",
        "webauthn.register_begin",
        "eid.start",
        "eid.complete",
    }
)
CITY_TZ = ZoneInfo("Europe/Berlin")


@bp.app_template_filter("local_time")
def local_time(value: dt.datetime | None) -> str:
    """A date and time as citizens of the city read it: local time in their language, with the
    zone it is in (``07.12.2026, 04:00:00 MEZ``, ``Dec 7, 2026, 4:00:00 AM CET``)."""
    if value is None:
        return ""
    locale = str(get_locale() or "de")
    when = format_datetime(value, "medium", tzinfo=CITY_TZ, locale=locale)
    zone = format_datetime(value, "z", tzinfo=CITY_TZ, locale=locale)  # MEZ/MESZ in German
    if not zone.isalpha():  # no name in this language (English gives "+0100"): CET/CEST
        zone = value.astimezone(CITY_TZ).tzname() or "UTC"
    return f"{when} {zone}"


def _event_label(action: str, outcome: str) -> str:
    """Audit actions in plain words; unknown ones (other packages') by a generic label."""
    ok = outcome in ("success", "info")
    labels: dict[str, str] = {
        "account.create": _("Account created"),
        "email.verify": _("E-mail address confirmed") if ok else _("Invalid confirmation link used"),
        "email.change_request": _("Change of e-mail address requested")
        if ok
        else _("Change of e-mail address refused"),
        "email.change": _("E-mail address changed") if ok else _("Invalid confirmation link used"),
        "login.password": _("Logged in with password") if ok else _("Failed login attempt"),
        "logout": _("Logged out"),
        "password.reset_request": _("New password requested"),
        "password.reset": _("Password changed") if ok else _("Invalid password link used"),
        "password.change": _("Password changed") if ok else _("Password change refused"),
        "consent.grant": _("Service allowed"),
        "consent.deny": _("Service refused"),
        "consent.withdraw": _("Consent withdrawn"),
        "data.export": _("Data downloaded"),
        "account.delete": _("Account deletion refused") if not ok else _("Account deleted"),
        "account.register_existing": _("Registration attempted with your address"),
        "authorize.code": _("Signed in to a service"),
        "account.disable": _("Account disabled"),
        "token.revoke": _("Access of a service ended"),
        "token.family_revoked": _("Access of a service ended for your protection"),
        "smartcard.enroll": _("Device registered"),
        "smartcard.renew": _("Device certificate renewed"),
        "smartcard.approve": _("Login confirmed on your device") if ok else _("Login on your device refused"),
        "smartcard.device_rename": _("Device renamed"),
        "smartcard.device_remove": _("Device removed"),
        "pki.certificate.issue": _("Device certificate issued"),
        "pki.certificate.revoke": _("Device certificate revoked"),
        "webauthn.register": _("Security key registered"),
        "webauthn.authenticate": _("Logged in with security key") if ok else _("Failed login attempt"),
        "webauthn.rename": _("Security key renamed"),
        "webauthn.remove": _("Security key removed"),
        "eid.link": _("ID card linked"),
        "eid.verify": _("Identity confirmed with ID card") if ok else _("ID card check failed"),
        "login.eid": _("Logged in with ID card"),
    }
    if action in labels:
        return str(labels[action])
    if action.startswith("login."):
        return str(_("Logged in with a further factor") if ok else _("Failed login attempt"))
    if action.startswith(("device", "smartcard", "webauthn", "pki.")):
        return str(_("Device: %(event)s", event=action))
    if action.startswith("eid"):
        return str(_("ID card: %(event)s", event=action))
    return str(_("Other event: %(event)s", event=action))


def security_log(account_id: str) -> list[dict[str, Any]]:
    """Recent security events of the account, from the audit log, newest first."""
    names = {c.client_id: c.name for c in uow.db().execute(select(Client)).scalars()}
    rows = []
    for e in audit_entries(uow.db(), account_id, limit=SECURITY_LOG_SIZE, leave_out=BOOKKEEPING):
        service = names.get(e.subject) if e.subject != account_id else None
        rows.append(
            {
                "at": local_time(e.at),
                "iso": e.at.isoformat(),
                "what": _event_label(e.action, e.outcome),
                "service": service,
                "ok": e.outcome in ("success", "info"),
            }
        )
    return rows


@bp.get("/account")
def home() -> Any:
    acct = browser.current_account()
    if acct is None:
        return redirect("/login")
    consents = (
        uow.db()
        .execute(
            select(Consent, Client)
            .join(Client, Client.client_id == Consent.client_id)
            .where(Consent.account_id == acct.id)
            .order_by(Client.name)
        )
        .all()
    )
    links = [link for link in (hook() for hook in ACCOUNT_LINKS) if link is not None]
    return render_template(
        "account.html",
        email=accounts.email_of(runtime().keys, acct),
        account=acct,
        verified_at=local_time(acct.email_verified_at),
        created_at=local_time(acct.created_at),
        consents=[(c, cl, local_time(c.granted_at)) for c, cl in consents],
        links=links,
        events=security_log(acct.id),
        csrf_token=browser.csrf_token(),
    )


@bp.post("/account/consents/withdraw")
def withdraw_consent() -> Any:
    browser.check_csrf()
    acct = browser.current_account()
    if acct is None:
        return redirect("/login")
    cid = request.form.get("client_id", "")[:64]
    row = uow.db().get(Consent, (acct.id, cid))
    if row is not None:
        uow.db().delete(row)
        # Withdrawn means the service can no longer act in the citizen's name: its tokens stop
        # working now, not when they expire (GDPR Art. 7(3); OWASP ASVS V3.5.1)
        rt = runtime()
        revoked = backchannel.end_client_grants(
            uow.db(),
            rt.key_cache,
            issuer=rt.config.issuer,
            subject_key=rt.keys.subject,
            account_id=acct.id,
            client_id=cid,
            reason="consent withdrawn",
        )
        uow.record(
            action="consent.withdraw",
            outcome="success",
            actor=acct.id,
            subject=cid,
            reason="withdrawn by citizen",
            details={"grants_revoked": revoked},
        )
    return redirect("/account", code=303)


MAX_PASSWORD_FIELD = 1024
THROTTLED = "throttled"


def password_context(email: str) -> list[str]:
    """Words a citizen's password must not be built on: the address, the city, the service."""
    return [email, runtime().config.branding.city_name, "cityid"]


def password_problem(exc: accounts.WeakPassword) -> str:
    if isinstance(exc, accounts.GuessablePassword):
        return str(
            _(
                "This password is too easy to guess: it is a common password, a word or a name, or a "
                "simple pattern. Please choose another one, for example several unrelated words."
            )
        )
    return str(_("Please choose a password of at least %(n)s characters.", n=accounts.MIN_PASSWORD))


def mail_account(acct: Account, subject: str, body: str) -> None:
    """A notice to the account's own address, sent once this request's state has committed."""
    send_after_commit(accounts.email_of(runtime().keys, acct), subject, body, account_id=acct.id)


def may_change_strong_factors(acct: Account) -> bool:
    """Whether this browser session may add or remove a device, passkey or eID link: always
    for an account without a means at substantial, else only after a recent login at that level
    (``levels.holds_strong_factor``: a password alone must not swap the second factor)."""
    return not levels.holds_strong_factor(uow.db(), acct) or browser.recent_strong_factor() is not None


def notify_factor_change(acct: Account, what: str) -> None:
    """Tell the account's address that a way of logging in was added or removed (NIST SP
    800-63B §6.1.2.1): the owner learns of a factor someone else bound."""
    cfg = runtime().config
    mail_account(
        acct,
        _("A change to how you log in to %(city)s", city=cfg.branding.city_name),
        _(
            "%(what)s\n\nIf this was not you, log in, remove it under “My account” and change your "
            "password: %(link)s",
            what=what,
            link=f"{cfg.issuer}/account",
        ),
    )


def notify_password_changed(acct: Account) -> None:
    """Tell the account's address that its password changed (ASVS V2.2.3): the owner of an
    account someone else took over learns of it, with the way back."""
    cfg = runtime().config
    mail_account(
        acct,
        _("Your password for %(city)s was changed", city=cfg.branding.city_name),
        _(
            "The password of your account was changed just now, and the browsers logged in to "
            "it elsewhere were logged out.\n\nIf this was not you, choose a new password now with "
            "“Forgot your password?”: %(link)s",
            link=f"{cfg.issuer}/forgot",
        ),
    )


def end_account_sessions(account_id: str, reason: str, *, keep_sid: str | None = None) -> backchannel.Ended:
    """The account's other browser sessions end here and at the services they signed in to."""
    rt = runtime()
    return backchannel.end_sessions(
        uow.db(),
        rt.key_cache,
        issuer=rt.config.issuer,
        subject_key=rt.keys.subject,
        account_id=account_id,
        reason=reason,
        keep_sid=keep_sid,
    )


def claim_attempt(email_index: str) -> throttle.Attempt | throttle.Blocked:
    """Count a password attempt before it is checked (``idp.throttle.claim``), committed at once
    in a transaction of its own, so that concurrent attempts see it.

    Call it before the request changes anything: the request's transaction so far (reads only)
    is rolled back here, which on SQLite also lets go of the write lock the claim needs.
    """
    db = uow.db()
    if db.new or db.dirty or db.deleted:
        raise RuntimeError("a password attempt is counted before the request changes anything")
    db.rollback()
    with transaction(runtime().sessions) as s:
        return throttle.claim(s, email_index, utcnow())


def settle_attempt(attempt: throttle.Attempt, email_index: str, *, right: bool, account_id: str) -> None:
    """A right password clears the count (even if the request fails later, e.g. unverified); a
    wrong one stays counted, and the hold it started is noted in the audit log."""
    if right:
        throttle.clear(uow.db(), email_index)
        uow.on_failure(lambda s: throttle.clear(s, email_index))
    elif attempt.hold is not None:
        seconds = int(attempt.hold.total_seconds())
        uow.record(
            action="login.throttle",
            outcome="info",
            actor="anonymous",
            subject=account_id,
            reason=f"{attempt.number} consecutive failures: blocked for {seconds} s",
        )


class PageFlags(TypedDict):
    """What a sensitive page shows: whether a strong factor stands in, whether there is a password."""

    strong: bool
    has_password: bool


@dataclass(frozen=True)
class Sensitive:
    """A page that changes something sensitive: who asks, and how they confirm it is them."""

    account: Account
    strong: str | None  # a factor above low from the last ten minutes stands in for the password

    @property
    def page(self) -> PageFlags:
        return {"strong": self.strong is not None, "has_password": self.account.password_hash is not None}


def sensitive_request() -> Sensitive | None:
    """CSRF checked on POST; None if no one is logged in (the page sends them to the login)."""
    if request.method == "POST":
        browser.check_csrf()
    acct = browser.current_account()
    if acct is None:
        return None
    return Sensitive(acct, browser.recent_strong_factor())


def reauthenticate(acct: Account, password: str, *, action: str) -> str | None:
    """Re-authentication by password before a sensitive change (NIST SP 800-63B §7.2), under the
    login throttle (§5.2.2): guesses through a taken-over session count like login guesses.

    None if the password is right. Otherwise the refusal (``THROTTLED`` or why it failed) is
    recorded as ``action`` denied. Call it before the request changes anything (see
    :func:`claim_attempt`).
    """
    index, who = acct.email_index, acct.id
    reason: str | None = None
    if acct.password_hash is None:
        reason = "no password and no recent strong factor"
    else:
        attempt = claim_attempt(index)
        if isinstance(attempt, throttle.Blocked):
            reason = THROTTLED
        else:
            right = verify_password(acct.password_hash, password)
            settle_attempt(attempt, index, right=right, account_id=who)
            reason = None if right else "wrong password"
    if reason is not None:
        uow.record(action=action, outcome="denied", actor=who, subject=who, reason=reason)
    return reason


def _password_link() -> tuple[str, str] | None:
    acct = browser.current_account()
    if acct is None or acct.password_hash is None:
        return None
    return "/account/password", _("Change my password")


ACCOUNT_LINKS.append(_password_link)


def _password_page(errors: FormErrors | None = None) -> str:
    return render_template("account_password.html", csrf_token=browser.csrf_token(), errors=errors)


@bp.route("/account/password", methods=["GET", "POST"])
def change_password() -> Any:
    """Change the password, knowing the current one (NIST SP 800-63B §6.1.2.3 / OWASP)."""
    if request.method == "POST":
        browser.check_csrf()
    acct = browser.current_account()
    if acct is None or acct.password_hash is None:
        return redirect("/login", code=303)
    if request.method == "GET":
        return _password_page()
    current = request.form.get("current_password", "")
    new, again = request.form.get("password", ""), request.form.get("password2", "")
    too_long = FormErrors()
    for name, value in (("current_password", current), ("password", new), ("password2", again)):
        if len(value) > MAX_PASSWORD_FIELD:
            too_long.add(name, _("This entry is too long."))
    if too_long:
        return _password_page(too_long), 400
    refused = reauthenticate(acct, current, action="password.change")
    if refused == THROTTLED:
        held = field_error("current_password", _("Too many wrong passwords. Please try again later."))
        return _password_page(held), 429
    if refused is not None:
        return _password_page(field_error("current_password", _("The current password is wrong."))), 401
    if new != again:
        return _password_page(field_error("password2", _("The two passwords do not match."))), 400
    try:
        accounts.set_password(uow.db(), acct, new, password_context(accounts.email_of(runtime().keys, acct)))
    except accounts.WeakPassword as exc:
        return _password_page(field_error("password", password_problem(exc))), 400
    # OWASP Session Management: other sessions end when the password changes, at the services
    # too (back-channel logout, their grants revoked); this one is renewed.
    here = browser.current()
    ended = end_account_sessions(acct.id, "password changed", keep_sid=here.sid if here else None)
    factors = browser.factors(here)
    browser.log_in(acct, "pwd")
    uow.record(
        action="password.change",
        outcome="success",
        actor=acct.id,
        subject=acct.id,
        reason="changed by the citizen",
        details={
            "other_sessions_ended": ended.sessions,
            "grants_revoked": ended.grants,
            "logout_notices": ended.notices,
            "factors_kept": sorted(factors),
        },
    )
    notify_password_changed(acct)
    return render_template(
        "message.html",
        title=_("Password changed"),
        status="ok",
        message=_("Your new password is saved. Your other browsers have been logged out."),
        link="/account",
        link_text=_("Back to my account"),
    )


@bp.post("/account/logout")
def local_logout() -> Any:
    browser.check_csrf()
    from idp.views.oidc import end_browser_session

    end_browser_session(reason="citizen logged out")
    return render_template(
        "message.html",
        title=_("You are logged out"),
        status="ok",
        message=_("You have been logged out of your city account."),
        link="/login",
        link_text=_("Log in again"),
    )
