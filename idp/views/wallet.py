"""The EU identity wallet as a route to *high* (OpenID4VP 1.0 verifier pages; docs/wallet.md).

``POST /login/eid`` with ``eid=wallet`` starts it (idp.views.eid): the browser comes to
``GET /login/eid/wallet``: on a phone a button that opens the wallet on this device, on a
desktop a QR code for the phone's wallet and a page that waits (polls) for the answer. The
wallet fetches the signed request at ``/login/eid/wallet/request`` and posts its encrypted
answer to the eID callback, which verifies it (idp.eid.wallet.connector) like any eID answer.
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import urlencode

import requests
import segno
from flask import Blueprint, current_app, jsonify, redirect, render_template, request
from flask_babel import gettext as _

from idp import browser, eid_store, uow
from idp.crypto import derive_key, equal, random_token
from idp.runtime import runtime

bp = Blueprint("wallet", __name__)

FLOWS = ("same", "cross")
_MOBILE = re.compile(r"Mobi|Android|iPhone|iPad", re.IGNORECASE)
_BUILDING = threading.Lock()


def available() -> bool:
    return bool(runtime().config.wallet.enabled) and connector() is not None


def connector() -> Any:
    """The wallet connector, built once (keys and trust list read from the configured files)."""
    cache = current_app.extensions.setdefault("cityid_wallet", {})
    if "connector" in cache:
        return cache["connector"]
    with _BUILDING:
        if "connector" not in cache:
            cache["connector"] = _build()
    return cache["connector"]


def _build() -> Any:
    from pathlib import Path

    from idp.eid.wallet.connector import WalletConnector, http_fetch, load_verifier
    from idp.eid.wallet.verify import StatusLists, TrustList

    cfg = runtime().config
    w = cfg.wallet
    if not w.enabled:
        return None
    try:
        verifier = load_verifier(cfg)
        trust = TrustList.from_pem(Path(w.trust_anchors_file).read_bytes())
    except (OSError, ValueError) as exc:
        current_app.logger.error("wallet connector unavailable: %s", exc)
        return None
    return WalletConnector(
        verifier=verifier,
        trust=trust,
        status=StatusLists(trust, http_fetch(requests.get), allow_loopback_http=bool(w.simulation)),
        base_url=cfg.issuer,
        pseudonym_key=derive_key(cfg.secret_key, "wallet-recognition"),
        vcts=tuple(v.strip() for v in w.pid_vct.split(",") if v.strip()),
        simulation=bool(w.simulation),
    )


def _state_key() -> bytes:
    from idp.views.eid import _keys

    return _keys()[1]


def _pending(state: str) -> Any:
    if not state or len(state) > 200:
        return None
    digest = eid_store.state_digest(_state_key(), state)
    found = eid_store.find_pending(uow.db(), runtime().keys.personal_data, digest)
    if found is None or found[1].connector != "wallet":
        return None
    return found


def _page(template: str, status: int = 200, **ctx: Any) -> Any:
    return render_template(template, simulation=bool(runtime().config.wallet.simulation), **ctx), status


def _gone() -> Any:
    return _page(
        "eid_message.html",
        400,
        title=_("This wallet request cannot be used"),
        message=_(
            "It is unknown, expired, was already answered, or the wallet's answer was refused. "
            "Please start again."
        ),
        link="/login/eid",
        link_text=_("Start again"),
    )


def _is_starter(row: Any) -> bool:
    s = browser.current()
    return s is not None and equal(row.session_digest, s.id_digest)


@bp.get("/login/eid/wallet")
def wallet_page() -> Any:
    """The waiting page (QR code on a desktop, a same-device button on a phone). When the
    wallet's answer has been verified, the browser that started continues to /complete."""
    conn = connector()
    state = request.args.get("state", "")[:200]
    found = _pending(state) if conn is not None else None
    if found is None or not _is_starter(found[0]):
        uow.record(
            action="wallet.page",
            outcome="denied",
            actor="anonymous",
            subject="",
            reason="no pending wallet request",
        )
        return _gone()
    row, pending = found
    if row.result_enc is not None:
        return _hand_over(state, row)
    phone = bool(_MOBILE.search(request.headers.get("User-Agent", "")))
    # A QR code for another device: not on a phone (nothing to scan it with), and only for a
    # logged-in citizen (see _hand_over).
    cross_ok = browser.current_account() is not None and not phone
    qr = None
    if cross_ok:
        qr = segno.make(conn.authorization_url(pending, "cross"), error="m").svg_data_uri(scale=4, border=2)
    return _page(
        "wallet.html",
        same_device_url=conn.authorization_url(pending, "same"),
        qr=qr,
        phone=phone,
        status_url=f"/login/eid/wallet/status?{urlencode({'state': state})}",
        state=state,
    )


def _hand_over(state: str, row: Any) -> Any:
    """Cross-device: the answer came from a phone, the starter's browser continues. A fresh
    one-time handover secret replaces the one in the wallet's redirect (single use either way)."""
    sealer = runtime().keys.personal_data
    result = eid_store.result_of(sealer, row)
    if result is None:
        return _gone()
    if browser.current_account() is None:
        # OpenID4VP 1.0 §14.2 (cross-device session phishing): logging in by a wallet that
        # answered from another device is not offered; only a logged-in citizen links/steps up.
        uow.record(
            action="wallet.handover",
            outcome="denied",
            actor="anonymous",
            subject="",
            reason="cross-device login without account",
        )
        return _gone()
    if not _linked_to_current(result):
        # OpenID4VP 1.0 §14.2 (cross-device session phishing): whoever sees the QR code can answer
        # it with his own wallet. A first link through the QR code waits for the citizen to
        # confirm, in her own browser, that the PID's person is she (docs/wallet.md).
        return _confirm_page(state, result)
    return _continue(state, row, result)


def _continue(state: str, row: Any, result: Any) -> Any:
    from idp.views.eid import _handover_digest

    handover = random_token(32)
    eid_store.store_result(
        runtime().keys.personal_data, row, result, handover_digest=_handover_digest(handover)
    )
    return redirect(f"/login/eid/complete?{urlencode({'state': state, 'handover': handover})}", code=303)


def _linked_to_current(result: Any) -> bool:
    """The PID is already linked to the logged-in account (a step-up, not a first link)."""
    from idp.views.eid import _keys

    account = browser.current_account()
    digest = eid_store.pseudonym_digest(_keys()[0], result.issuer, result.pseudonym)
    link = eid_store.link_by_pseudonym(uow.db(), digest)
    return account is not None and link is not None and link.account_id == account.id


def _confirm_page(state: str, result: Any) -> Any:
    def value(name: str) -> str:
        a = result.attribute(name)
        return a.value if a is not None else ""

    return _page(
        "wallet_confirm.html",
        state=state,
        given_name=value("given_name"),
        family_name=value("family_name"),
        birthdate=value("birthdate"),
        csrf_token=browser.csrf_token(),
    )


@bp.post("/login/eid/wallet/confirm")
def wallet_confirm() -> Any:
    """The citizen's answer to "Is this you?" for a first link through the QR code: ``link``
    continues to /complete, ``cancel`` spends the answer and links nothing. Both are audited."""
    browser.check_csrf()
    state = request.form.get("state", "")[:200]
    decision = request.form.get("decision", "")
    account = browser.current_account()
    found = _pending(state) if connector() is not None else None
    result = (
        eid_store.result_of(runtime().keys.personal_data, found[0])
        if found is not None and _is_starter(found[0])
        else None
    )
    if account is None or found is None or result is None or decision not in ("link", "cancel"):
        uow.record(
            action="wallet.confirm",
            outcome="denied",
            actor=account.id if account else "anonymous",
            subject="",
            reason="no wallet answer to confirm for this browser session",
        )
        return _gone()
    if decision == "cancel":
        eid_store.consume_pending(uow.db(), eid_store.state_digest(_state_key(), state))
        uow.record(
            action="wallet.confirm",
            outcome="denied",
            actor=account.id,
            subject=account.id,
            reason="citizen did not recognise the PID of the cross-device answer; nothing linked",
        )
        return _page(
            "eid_message.html",
            200,
            title=_("Nothing was linked"),
            message=_("The wallet's answer was discarded. Your account is unchanged."),
            link="/account",
            link_text=_("To your account"),
        )
    uow.record(
        action="wallet.confirm",
        outcome="success",
        actor=account.id,
        subject=account.id,
        reason="citizen confirmed the PID of the cross-device answer as hers",
    )
    return _continue(state, found[0], result)


@bp.get("/login/eid/wallet/status")
def wallet_status() -> Any:
    """For the waiting page's script: ``pending`` until the answer is there (then ``approved``),
    ``expired`` when the request is gone (refused, used, or timed out)."""
    state = request.args.get("state", "")[:200]
    found = _pending(state)
    if found is None or not _is_starter(found[0]):
        return jsonify(status="expired")
    return jsonify(status="approved" if found[0].result_enc is not None else "pending")


@bp.get("/login/eid/wallet/request")
def request_object() -> Any:
    """OpenID4VP 1.0 §5.10 / RFC 9101 §5.2: the signed request object, fetched by the wallet."""
    conn = connector()
    state = request.args.get("state", "")[:200]
    flow = request.args.get("flow", "")
    found = _pending(state) if conn is not None else None
    if found is None or flow not in FLOWS or found[0].result_enc is not None:
        uow.record(
            action="wallet.request",
            outcome="denied",
            actor="anonymous",
            subject="",
            reason="unknown request_uri",
        )
        return jsonify(error="invalid_request_uri", error_description="unknown or expired request"), 404
    token = conn.request_object(found[1], flow)
    resp = current_app.response_class(token, mimetype="application/oauth-authz-req+jwt")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def wallet_answer(state: str, flow: str, handover: str) -> Any:
    """OpenID4VP 1.0 §8.2: the response to the wallet's POST. Same device: ``redirect_uri``
    takes the citizen's browser on (with the handover secret); cross device: nothing to open on
    the phone, the waiting page continues."""
    if flow == "same":
        query = urlencode({"state": state, "handover": handover})
        return jsonify(redirect_uri=f"{runtime().config.issuer}/login/eid/complete?{query}")
    return jsonify({})


def wallet_error(code: str, description: str) -> Any:
    """OpenID4VP 1.0 §8.2 / RFC 6749 §5.2 style error to the wallet (no state changed)."""
    return jsonify(error="invalid_request", error_description=f"{code}: {description}"), 400


def _wallet_ctx() -> dict[str, Any]:
    try:
        return {"wallet_available": bool(runtime().config.wallet.enabled)}
    except RuntimeError:
        return {"wallet_available": False}


def init_app(app: Any, srv: Any) -> None:
    app.context_processor(_wallet_ctx)
