"""My account: overview, consents, logout."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request
from flask_babel import gettext as _
from sqlalchemy import select

from idp import accounts, browser, uow
from idp.models import Client, Consent
from idp.runtime import runtime

bp = Blueprint("account", __name__)


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
        )
        .all()
    )
    return render_template(
        "account.html",
        email=accounts.email_of(runtime().keys, acct),
        account=acct,
        consents=consents,
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
        uow.record(
            action="consent.withdraw",
            outcome="success",
            actor=acct.id,
            subject=cid,
            reason="withdrawn by citizen",
        )
    return redirect("/account")


@bp.post("/account/logout")
def local_logout() -> Any:
    browser.check_csrf()
    from idp.views.oidc import end_browser_session

    end_browser_session(reason="citizen logged out")
    return render_template(
        "message.html",
        title=_("You are logged out"),
        status="ok",
        message=_("You have been logged out of cityid."),
    )
