"""Your data: download everything we hold (GDPR Art. 15/20) and delete the account (Art. 17).

Also gives error pages a way back: while a service's sign-in is pending in this browser, pages
offer to continue it (``way_back`` in every template).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask import Blueprint, Flask, Response, redirect, render_template, request
from flask_babel import gettext as _
from sqlalchemy.exc import SQLAlchemyError

from db import utcnow
from idp import browser, uow
from idp.forms import FormErrors, field_error
from idp.oauth.server import client_row, key_cache
from idp.privacy import erase_account, export_account
from idp.runtime import runtime
from idp.views.account import THROTTLED, reauthenticate, sensitive_request

bp = Blueprint("privacy", __name__)

MAX_PASSWORD_FIELD = 1024


@bp.post("/account/export")
def export() -> Any:
    browser.check_csrf()
    acct = browser.current_account()
    if acct is None:
        return redirect("/login", code=303)
    rt = runtime()
    data = export_account(uow.db(), rt.keys, acct.id, controller=rt.config.branding.city_name)
    uow.record(
        action="data.export",
        outcome="success",
        actor=acct.id,
        subject=acct.id,
        reason="GDPR Art. 15/20 download",
    )
    body = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True)
    name = f"cityid-data-{utcnow():%Y-%m-%d}.json"
    return Response(
        body,
        mimetype="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


def _confirm_page(
    errors: FormErrors | None = None, *, strong: bool = False, has_password: bool = True
) -> str:
    return render_template(
        "account_delete.html",
        csrf_token=browser.csrf_token(),
        errors=errors,
        strong=strong,
        has_password=has_password,
    )


@bp.route("/account/delete", methods=["GET", "POST"])
def delete_account() -> Any:
    who_asks = sensitive_request()
    if who_asks is None:
        return redirect("/login", code=303)
    acct, strong, page = who_asks.account, who_asks.strong, who_asks.page
    if request.method == "GET":
        return _confirm_page(**page)
    password = request.form.get("password", "")
    if len(password) > MAX_PASSWORD_FIELD:
        return _confirm_page(field_error("password", _("This entry is too long.")), **page), 400
    if request.form.get("confirm") != "yes":
        # the box is what is wrong: the password is not looked at (and not counted as a guess)
        msg = _("Please tick the box to confirm that you want to delete your account.")
        return _confirm_page(field_error("confirm", msg), **page), 400
    if strong is not None:
        confirmed_by = f"recent {strong} factor"
    else:
        refused = reauthenticate(acct, password, action="account.delete")
        if refused == THROTTLED:
            msg = _("Too many wrong passwords. Please try again later.")
            return _confirm_page(field_error("password", msg), **page), 429
        if refused is not None:
            msg = _("The password is wrong. Your account has not been deleted.")
            return _confirm_page(field_error("password", msg), **page), 401
        confirmed_by = "password"
    rt = runtime()
    account_id = acct.id
    browser.log_out()  # this browser's session row goes first; erase_account removes the others
    result = erase_account(uow.db(), rt.keys, key_cache(), issuer=rt.config.issuer, account_id=account_id)
    # The account id is gone from the log; this entry names only the pseudonym.
    uow.record(
        action="account.delete",
        outcome="success",
        actor=result.pseudonym,
        subject=result.pseudonym,
        reason="erased at the citizen's request (GDPR Art. 17)",
        details={
            "confirmed_by": confirmed_by,
            "sessions": result.sessions,
            "grants": result.grants,
            "logout_notices": result.logout_notices,
            "audit_entries_pseudonymised": result.audit_entries,
        },
    )
    return render_template(
        "message.html",
        title=_("Your account has been deleted"),
        status="ok",
        message=_(
            "We have deleted your personal data and logged you out of all services. "
            "The services you used have been told. Entries in our security log no longer "
            "name you."
        ),
    )


def _way_back() -> dict[str, str] | None:
    """The service sign-in waiting in this browser, if any: a local URL and the service's name."""
    s = browser.current()
    if s is None or not s.pending:
        return None
    try:
        url = str(json.loads(s.pending).get("url", ""))
    except ValueError:
        return None
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not url.startswith("/") or url.startswith("//"):
        return None
    cid = (parse_qs(parts.query).get("client_id") or [""])[0][:64]
    client = client_row(uow.db(), cid) if cid else None  # read once per request
    if client is None:
        return None
    return {"url": url, "service": client.name}


def init_app(app: Flask, srv: Any) -> None:
    @app.context_processor
    def _way_back_context() -> dict[str, Any]:
        try:
            return {"way_back": _way_back()}
        except SQLAlchemyError:  # an error page must render even when the database does not answer
            return {"way_back": None}
