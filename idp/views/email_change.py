"""Change of e-mail address: asked for with the password, done by a link sent to the new address.

The citizen confirms who they are (current password, or a factor of level *substantial* used in
the last ten minutes, NIST SP 800-63B §7.2), and we send a single-use link to the new address;
following it proves control of that address (as at registration) and changes the address. The old
address hears about both steps, so a taken-over session cannot move an account away unnoticed.

No enumeration: whether the new address is already someone's account or not, the same happens
(page, mails, audit record); following the link for a taken address changes nothing. A password
change or reset cancels a pending change: it is what the notice asks a surprised owner to do.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, redirect, render_template, request
from flask_babel import gettext as _

from idp import accounts, browser, uow
from idp.forms import FormErrors, field_error
from idp.mail import send_after_commit
from idp.runtime import runtime
from idp.views.account import ACCOUNT_LINKS, THROTTLED, mail_account, reauthenticate, sensitive_request
from idp.views.auth import RESEND_INTERVAL, link_sent_recently

bp = Blueprint("email_change", __name__)

MAX_FIELD = 1024
PATH = "/account/email"
CONFIRM_PATH = "/account/email/confirm"


def _link() -> tuple[str, str] | None:
    if browser.current_account() is None:
        return None
    return PATH, _("Change my e-mail address")


ACCOUNT_LINKS.append(_link)


def _page(errors: FormErrors | None = None, *, email: str = "", strong: bool, has_password: bool) -> str:
    return render_template(
        "account_email.html",
        csrf_token=browser.csrf_token(),
        errors=errors,
        email=email,
        strong=strong,
        has_password=has_password,
    )


def _lifetime() -> dt.timedelta:
    return dt.timedelta(hours=runtime().config.email_verification_hours)


@bp.route(PATH, methods=["GET", "POST"])
def request_change() -> Any:
    who_asks = sensitive_request()
    if who_asks is None:
        return redirect("/login", code=303)
    acct, strong, page = who_asks.account, who_asks.strong, who_asks.page
    if request.method == "GET":
        return _page(**page)
    wanted, password = request.form.get("email", ""), request.form.get("password", "")
    too_long = FormErrors()
    for name, value in (("email", wanted), ("password", password)):
        if len(value) > MAX_FIELD:
            too_long.add(name, _("This entry is too long."))
    if too_long:
        return _page(too_long, **page), 400
    who = acct.id
    if strong is None:
        refused = reauthenticate(acct, password, action="email.change_request")
        if refused == THROTTLED:
            held = field_error("password", _("Too many wrong passwords. Please try again later."))
            return _page(held, email=wanted, **page), 429
        if refused is not None:
            return _page(field_error("password", _("The password is wrong.")), email=wanted, **page), 401
    try:
        new_email = accounts.checked_email(wanted)
    except accounts.InvalidEmail:
        return _page(
            field_error("email", _("Please enter a valid e-mail address.")), email=wanted, **page
        ), 400
    keys = runtime().keys
    if keys.email_lookup(new_email) == acct.email_index:
        return _page(
            field_error("email", _("This is already your e-mail address.")), email=wanted, **page
        ), 400
    # Whether the new address is someone's account or not, the same happens (no enumeration):
    # the link goes out; following it for a taken address changes nothing (409).
    if link_sent_recently(acct, accounts.EMAIL_CHANGE, _lifetime()):
        outcome = f"link sent less than {int(RESEND_INTERVAL.total_seconds())} s ago: none sent"
    else:
        _send_links(acct, new_email)
        outcome = "link sent to the new address"
    uow.record(
        action="email.change_request",
        outcome="success",
        actor=who,
        subject=who,
        reason=outcome,
        details={"confirmed_by": f"recent {strong} factor" if strong else "password"},
    )
    return render_template(
        "message.html",
        title=_("Check your inbox"),
        status="ok",
        message=_(
            "We have sent an e-mail to the new address. Open the link in it to finish the change. "
            "Until then, your current address stays in use."
        ),
        link="/account",
        link_text=_("Back to my account"),
    )


def _send_links(acct: Any, new_email: str) -> None:
    cfg = runtime().config
    city = cfg.branding.city_name
    # Only the latest request counts: a link sent to a mistyped address must not stay usable
    # once the citizen asked again for the right one.
    accounts.cancel_links(uow.db(), acct.id, (accounts.EMAIL_CHANGE,))
    token = accounts.issue_email_token(
        uow.db(), runtime().keys, acct, accounts.EMAIL_CHANGE, _lifetime(), new_email=new_email
    )
    send_after_commit(
        new_email,
        _("Confirm your new e-mail address for %(city)s", city=city),
        _(
            "Please confirm that this is the new e-mail address of your account by opening this "
            "link:\n\n%(link)s\n\nThe link is valid for %(hours)s hours and can be used once. "
            "If you did not ask for this, ignore this message.",
            link=f"{cfg.issuer}{CONFIRM_PATH}?token={token}",
            hours=cfg.email_verification_hours,
        ),
        account_id=acct.id,
    )
    _notify_old_address(cfg, acct, new_email)  # a dead old mailbox only means retries, then none


def _notify_old_address(cfg: Any, acct: Any, new_email: str) -> None:
    mail_account(
        acct,
        _("Your e-mail address for %(city)s is about to change", city=cfg.branding.city_name),
        _(
            "Someone logged in to your account asked to change its e-mail address to %(masked)s. "
            "The change happens only once the link sent to that address is opened.\n\n"
            "If this was not you, change your password now: %(link)s",
            masked=accounts.mask_email(new_email),
            link=f"{cfg.issuer}/account/password",
        ),
    )


def _invalid_link() -> tuple[str, int]:
    return render_template(
        "message.html",
        title=_("This link is not valid"),
        status="error",
        message=_("The link is unknown, expired or was already used. You can ask for a new one."),
        link=PATH,
        link_text=_("Change my e-mail address"),
    ), 400


@bp.route(CONFIRM_PATH, methods=["GET", "POST"])
def confirm() -> Any:
    """GET shows a button, POST changes: mail scanners that open links change nothing."""
    token = request.values.get("token", "")[:200]
    if request.method == "GET":
        # A dead link says so at once (looked at, not used up: mail scanners open links too)
        try:
            accounts.check_email_token(uow.db(), runtime().keys, token, accounts.EMAIL_CHANGE)
        except accounts.InvalidLink as exc:
            uow.record(
                action="email.change", outcome="denied", actor="anonymous", subject="", reason=str(exc)
            )
            return _invalid_link()
        return render_template(
            "link_confirm.html",
            title=_("Confirm your new e-mail address"),
            message=_("Your account will use this address from now on."),
            action=CONFIRM_PATH,
            csrf_token=browser.csrf_token(),
            token=token,
        )
    browser.check_csrf()
    keys = runtime().keys
    try:
        change = accounts.change_email(uow.db(), keys, token)
    except accounts.InvalidLink as exc:
        uow.record(action="email.change", outcome="denied", actor="anonymous", subject="", reason=str(exc))
        return _invalid_link()
    except accounts.EmailTaken:
        uow.record(
            action="email.change",
            outcome="denied",
            actor="anonymous",
            subject="",
            reason="address taken meanwhile",
        )
        return render_template(
            "message.html",
            title=_("This address is already in use"),
            status="error",
            message=_("Another account uses this e-mail address now. Your address has not been changed."),
        ), 409
    acct = change.account
    cfg = runtime().config
    # the change stands whether or not the old mailbox still takes mail (the outbox retries)
    send_after_commit(
        change.old_email,
        _("Your e-mail address for %(city)s has changed", city=cfg.branding.city_name),
        _(
            "The e-mail address of your account is now %(masked)s. This address is no longer "
            "used for it.\n\nIf this was not you, contact the city's service desk.",
            masked=accounts.mask_email(change.new_email),
        ),
        account_id=acct.id,
    )
    uow.record(
        action="email.change",
        outcome="success",
        actor=acct.id,
        subject=acct.id,
        reason="link to the new address followed",
        details={"notice_to_previous_address": "queued"},
    )
    return render_template(
        "message.html",
        title=_("E-mail address changed"),
        status="ok",
        message=_("From now on, log in with your new e-mail address."),
        link="/account",
        link_text=_("Go to my account"),
    )
