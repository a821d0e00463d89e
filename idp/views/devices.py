"""My devices (``/account/devices``): the citizen's virtual smartcards; rename and remove.

Removing revokes the certificate at once (``cessationOfOperation``) and ends what was bound to
the device (``idp.views.smartcard.end_device_bindings``). Every change is CSRF-protected and
audited.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, redirect, render_template, request
from flask_babel import gettext as _

from db import utcnow
from idp import browser, uow
from idp.views.account import ACCOUNT_LINKS, local_time, may_change_strong_factors, notify_factor_change
from smartcard import devices
from smartcard.errors import SmartcardError

bp = Blueprint("devices", __name__)


def _link() -> tuple[str, str] | None:
    return "/account/devices", _("My devices")


def _page(acct: Any, error: str | None = None, status: int = 200) -> Any:
    items = devices.list_devices(uow.db(), account_id=acct.id)
    rows = [
        {
            "id": d.id,
            "name": d.name,
            "type": d.type,
            "level": d.max_level.label if d.max_level else "",
            "security_level": d.security_level,
            "enrolled": local_time(d.enrolled_at),
            "last_used": local_time(d.last_used_at),
            "expires": local_time(d.cert_not_after),
        }
        for d in items
    ]
    return render_template("devices.html", devices=rows, error=error, csrf_token=browser.csrf_token()), status


@bp.get("/account/devices")
def list_page() -> Any:
    acct = browser.current_account()
    if acct is None:
        return redirect("/login")
    return _page(acct)


@bp.post("/account/devices/<device_id>/rename")
def rename(device_id: str) -> Any:
    browser.check_csrf()
    acct = browser.current_account()
    if acct is None:
        return redirect("/login")
    try:
        devices.rename(
            uow.db(), account_id=acct.id, device_id=device_id[:40], name=request.form.get("name", "")
        )
    except SmartcardError as exc:
        # the subject is the acting account: a device id from the URL could name another
        # account and write into its security log (the id of a device not found is a detail)
        uow.record(
            action="smartcard.device_rename",
            outcome="denied",
            actor=acct.id,
            subject=acct.id,
            reason=exc.code,
            details={"device_id": device_id[:40]},
        )
        return _page(acct, _("Please enter a name of 1 to 100 characters."), 400)
    uow.record(
        action="smartcard.device_rename",
        outcome="success",
        actor=acct.id,
        subject=acct.id,
        details={"device_id": device_id[:40]},
    )
    return redirect("/account/devices", code=303)


@bp.post("/account/devices/<device_id>/remove")
def remove(device_id: str) -> Any:
    browser.check_csrf()
    acct = browser.current_account()
    if acct is None:
        return redirect("/login")
    from idp.views.smartcard import ca_in, revoke_for

    if not may_change_strong_factors(acct):  # else: remove the owner's device, then enrol one's own
        uow.record(
            action="smartcard.device_remove",
            outcome="denied",
            actor=acct.id,
            subject=acct.id,
            reason="step_up_required",
            details={"device_id": device_id[:40]},
        )
        return _page(
            acct,
            _(
                "To remove a device, first log in with a device, a security key or your ID card "
                "(within the last ten minutes). A lost phone: ask the city's service desk to block it."
            ),
            403,
        )
    try:
        revoked = revoke_for(uow.db(), ca_in(uow.db()))(
            device_id[:40], actor=acct.id, reason="removed by citizen", now=utcnow(), owner=acct.id
        )
    except SmartcardError as exc:
        uow.record(
            action="smartcard.device_remove",
            outcome="denied",
            actor=acct.id,
            subject=acct.id,
            reason=exc.code,
            details={"device_id": device_id[:40]},
        )
        return _page(acct, _("This device is not one of yours."), 404)
    uow.record(
        action="smartcard.device_remove",
        outcome="success",
        actor=acct.id,
        subject=acct.id,
        reason="removed by citizen",
        details={"device_id": revoked.device_id, "serial": revoked.serial, "grants": len(revoked.grant_ids)},
    )
    notify_factor_change(acct, _("A device was removed from your account."))
    return redirect("/account/devices", code=303)


def init_app(app: Flask, srv: Any) -> None:
    if _link not in ACCOUNT_LINKS:
        ACCOUNT_LINKS.append(_link)
