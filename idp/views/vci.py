"""cityid as an OpenID4VCI 1.0 credential issuer: the library card into the citizen's wallet
(docs/wallet.md). cityid is its own authorization server: the authorization-code flow runs
through the OpenID Connect endpoints (scope ``library_card``), the pre-authorized code flow
through ``/vci/token`` (authorization server ``<issuer>/vci``, RFC 8414 §3.1 metadata).

Endpoints: ``/.well-known/openid-credential-issuer`` (§12.2), ``POST /vci/nonce`` (§7),
``POST /vci/credential`` (§8), ``POST /vci/token`` (§6, pre-authorized code), the status list
``GET /vci/status/1`` (Token Status List §8.1), and the offer page ``/account/wallet-card``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

import segno
from flask import Blueprint, current_app, jsonify, redirect, render_template, request
from sqlalchemy.orm import Session

from db import utcnow
from idp import browser, eid_store, privacy, uow
from idp.crypto import derive_key
from idp.instance import InstanceKeys
from idp.runtime import runtime
from idp.vci import sdjwt, store

bp = Blueprint("vci", __name__)

CONFIG_ID = "library_card"
SCOPE = "library_card"
PRE_AUTH = "urn:ietf:params:oauth:grant-type:pre-authorized_code"
STATUS_PATH = "/vci/status/1"
MAX_BODY = 32 * 1024


def _key() -> bytes:
    cache = current_app.extensions.setdefault("cityid_vci", {})
    if "key" not in cache:
        cache["key"] = derive_key(runtime().config.secret_key, "vci")
    key: bytes = cache["key"]
    return key


def _issuer() -> str:
    return str(runtime().config.issuer)


def _error(status: int, error: str, description: str) -> Any:
    resp = jsonify(error=error, error_description=description)
    resp.status_code = status
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _signing_key() -> tuple[Any, list[str]]:
    """The credential issuer key (created at first use, certified by the city CA)."""
    from idp.ocsp_wsgi import load_issuing_ca
    from idp.views.pki import pki_holder
    from pki.credential_issuer import (
        active_credential_issuer,
        credential_issuer_signer,
        init_credential_issuer,
    )

    ca = load_issuing_ca(runtime(), pki_holder(current_app), uow.db())
    key = active_credential_issuer(uow.db(), ca)
    if key is None:
        city = runtime().config.branding.city_name or "cityid"
        key = init_credential_issuer(uow.db(), ca, f"CN={city} credential issuer,O={city},C=DE")
    return credential_issuer_signer(ca, key), key.x5c()


# --------------------------------------------------------------------------- metadata


@bp.get("/.well-known/openid-credential-issuer")
def issuer_metadata() -> Any:
    """OpenID4VCI 1.0 §12.2.4."""
    iss = _issuer()
    name = runtime().config.branding.city_name or "cityid"
    return jsonify(
        {
            "credential_issuer": iss,
            "authorization_servers": [iss, f"{iss}/vci"],
            "credential_endpoint": f"{iss}/vci/credential",
            "nonce_endpoint": f"{iss}/vci/nonce",
            "display": [{"name": name, "locale": "de"}, {"name": name, "locale": "en"}],
            "credential_configurations_supported": {
                CONFIG_ID: {
                    "format": "dc+sd-jwt",
                    "vct": sdjwt.LIBRARY_CARD_VCT,
                    "scope": SCOPE,
                    "cryptographic_binding_methods_supported": ["jwk"],
                    "credential_signing_alg_values_supported": ["ES256"],
                    "proof_types_supported": {"jwt": {"proof_signing_alg_values_supported": ["ES256"]}},
                    "credential_metadata": {
                        "display": [
                            {"name": "Stadtbibliotheksausweis", "locale": "de"},
                            {"name": "City library card", "locale": "en"},
                        ],
                        "claims": [
                            {"path": [n]}
                            for n in ("given_name", "family_name", "card_number", "valid_until", "library")
                        ],
                    },
                }
            },
        }
    )


@bp.get("/.well-known/oauth-authorization-server")
def as_metadata() -> Any:
    """RFC 8414 §3: the main authorization server's metadata (the authorization-code flow of
    OpenID4VCI 1.0 §5; wallets look here, not at OpenID Connect discovery): the same document."""
    from idp.views.oidc import discovery

    return discovery()


@bp.get("/.well-known/oauth-authorization-server/vci")
def vci_as_metadata() -> Any:
    """RFC 8414 §3.1 (path insertion): the authorization server of the pre-authorized code flow."""
    iss = _issuer()
    return jsonify(
        {
            "issuer": f"{iss}/vci",
            "token_endpoint": f"{iss}/vci/token",
            "grant_types_supported": [PRE_AUTH],
            "pre-authorized_grant_anonymous_access_supported": True,  # OpenID4VCI 1.0 §12.3
            "response_types_supported": [],
        }
    )


# --------------------------------------------------------------------------- token, nonce


@bp.post("/vci/token")
def token() -> Any:
    """OpenID4VCI 1.0 §6.1: the pre-authorized code grant with its tx_code."""
    form = request.form
    if form.get("grant_type") != PRE_AUTH:
        return _error(400, "unsupported_grant_type", "only the pre-authorized code grant")  # RFC 6749 §5.2
    try:
        account_id = store.redeem_offer(
            uow.db(), _key(), form.get("pre-authorized_code", ""), form.get("tx_code", "")
        )
    except store.GrantError as exc:
        uow.record(action="vci.token", outcome="denied", actor="wallet", subject="", reason=exc.description)
        if exc.count:
            code, key = form.get("pre-authorized_code", ""), _key()
            uow.on_failure(lambda s: store.count_failure(s, key, code))
        return _error(400, exc.error, exc.description)
    access = store.issue_access(uow.db(), _key(), account_id)
    uow.record(
        action="vci.token",
        outcome="success",
        actor="wallet",
        subject=account_id,
        reason="pre-authorized code",
    )
    resp = jsonify(
        access_token=access, token_type="Bearer", expires_in=int(store.ACCESS_LIFETIME.total_seconds())
    )
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/vci/nonce")
def nonce() -> Any:
    """OpenID4VCI 1.0 §7.2: a fresh c_nonce, not cacheable."""
    resp = jsonify(c_nonce=store.make_nonce(_key(), utcnow()))
    resp.headers["Cache-Control"] = "no-store"
    return resp


# --------------------------------------------------------------------------- credential


def _account_of_token() -> str | Any:
    """The account an access token is for: a pre-authorized flow token (opaque, Bearer), or one
    of our RFC 9068 access tokens with scope ``library_card`` (authorization-code flow), checked
    by idp.oauth.resource like every protected resource: a DPoP-bound (RFC 9449 §7) or
    certificate-bound (RFC 8705 §3) token only with its proof. Returns an error response else."""
    from idp.models import Grant
    from idp.oauth.resource import ResourceError, authenticate

    scheme, _sp, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        account = store.access_account(uow.db(), _key(), value.strip())
        if account is not None:
            return account
    try:
        claims = authenticate(required_scope=SCOPE)
    except ResourceError as exc:
        return exc.response()
    grant = uow.db().get(Grant, claims.get("gid", ""))
    if grant is None or grant.account_id is None:
        return _error(401, "invalid_token", "the access token is not valid")
    return str(grant.account_id)


@bp.post("/vci/credential")
def credential() -> Any:
    """OpenID4VCI 1.0 §8: one library card, bound to the key of the JWT proof."""
    account_id = _account_of_token()
    if not isinstance(account_id, str):
        uow.record(
            action="vci.credential", outcome="denied", actor="wallet", subject="", reason="invalid_token"
        )
        return account_id  # RFC 6750 §3 / RFC 9449 §7: the resource's error with WWW-Authenticate
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _error(400, "invalid_credential_request", "request too large")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, "invalid_credential_request", "a JSON object is needed")  # §8.3.1.2
    if body.get("credential_configuration_id") != CONFIG_ID:
        return _error(400, "unknown_credential_configuration", "only library_card")
    proofs = body.get("proofs")
    jwts = proofs.get("jwt") if isinstance(proofs, dict) else None
    if not isinstance(jwts, list) or len(jwts) != 1:
        return _denied(account_id, "invalid_proof", "exactly one jwt proof in proofs")  # §8.2
    now = utcnow()
    try:
        proof = sdjwt.verify_proof(jwts[0], audience=_issuer(), now=now)
    except sdjwt.ProofError as exc:
        return _denied(account_id, exc.error, exc.description)
    # §7 / Appendix F.4: the c_nonce is ours, fresh, and used once.
    expires = now + store.NONCE_LIFETIME
    if not store.nonce_fresh(_key(), proof.nonce, now) or eid_store.DbReplayStore(uow.db()).seen(
        f"vci-nonce:{proof.nonce[:80]}", expires
    ):
        return _denied(account_id, "invalid_nonce", "c_nonce unknown, expired or used")
    sealer = runtime().keys.personal_data
    card = store.card_of(uow.db(), sealer, account_id)
    if card is None or card.revoked or card.valid_until < now.date():
        return _denied(account_id, "credential_request_denied", "no valid library card for this account")
    signer, x5c = _signing_key()
    idx = store.new_status_entry(uow.db(), card.id)
    until = dt.datetime.combine(card.valid_until, dt.time(23, 59, 59), dt.UTC)
    issued = sdjwt.sd_jwt_vc(
        signer,
        x5c,
        plain={
            "iss": _issuer(),
            "vct": sdjwt.LIBRARY_CARD_VCT,
            "iat": int(now.timestamp()),
            "exp": int(until.timestamp()),
            "status": {
                "status_list": {"idx": idx, "uri": f"{_issuer()}{STATUS_PATH}"}
            },  # Token Status List §6.2
        },
        disclosable={
            "given_name": card.given_name,
            "family_name": card.family_name,
            "card_number": card.number,
            "valid_until": card.valid_until.isoformat(),
            "library": card.library,
        },
        holder_jwk=proof.jwk,
    )
    uow.record(
        action="vci.credential",
        outcome="success",
        actor="wallet",
        subject=account_id,
        reason=f"library_card status index {idx}",
    )
    resp = jsonify(credentials=[{"credential": issued}])  # §8.3
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _denied(account_id: str, error: str, description: str) -> Any:
    uow.record(
        action="vci.credential",
        outcome="denied",
        actor="wallet",
        subject=account_id,
        reason=f"{error}: {description}",
    )
    return _error(400, error, description)


@bp.get(STATUS_PATH)
def status_list() -> Any:
    """Token Status List §8.1: the signed list, ``application/statuslist+jwt``."""
    size, revoked = store.status_bits(uow.db())
    signer, x5c = _signing_key()
    body = sdjwt.status_list_token(
        signer, x5c, uri=f"{_issuer()}{STATUS_PATH}", revoked=revoked, size=size, now=utcnow(), ttl=60
    )
    resp = current_app.response_class(body, mimetype="application/statuslist+jwt")
    resp.headers["Cache-Control"] = "max-age=60"
    return resp


# --------------------------------------------------------------------------- My account: the offer


@bp.route("/account/wallet-card", methods=["GET", "POST"])
def offer_page() -> Any:
    """The credential offer (OpenID4VCI 1.0 §4.1) as a QR code, with its transaction code, for a
    citizen at *substantial* (a strong factor in the last ten minutes) with a library card."""
    account = browser.current_account()
    if account is None:
        return redirect("/login?" + urlencode({"next": "/account/wallet-card"}))
    card = store.card_of(uow.db(), runtime().keys.personal_data, account.id)
    strong = browser.recent_strong_factor() is not None
    offer = tx_code = qr = None
    if request.method == "POST":
        browser.check_csrf()
        if card is not None and not card.revoked and strong:
            code, tx_code = store.create_offer(uow.db(), _key(), account.id)
            offer = _offer_uri(code)
            qr = segno.make(offer, error="m").svg_data_uri(scale=3, border=2)
            uow.record(
                action="vci.offer",
                outcome="success",
                actor=account.id,
                subject=account.id,
                reason="library_card",
            )
        else:  # a security decision like any other: written to the audit log
            uow.record(
                action="vci.offer",
                outcome="denied",
                actor=account.id,
                subject=account.id,
                reason="no valid library card" if card is None or card.revoked else "no recent strong factor",
            )
    return render_template(
        "wallet_card.html",
        card=card,
        strong=strong,
        offer=offer,
        tx_code=tx_code,
        qr=qr,
        csrf_token=browser.csrf_token(),
    )


def _offer_uri(code: str) -> str:
    iss = _issuer()
    offer = {
        "credential_issuer": iss,
        "credential_configuration_ids": [CONFIG_ID],
        "grants": {
            PRE_AUTH: {
                "pre-authorized_code": code,
                "tx_code": {"input_mode": "numeric", "length": 6, "description": "Code shown on My account"},
                "authorization_server": f"{iss}/vci",
            }
        },
    }
    return "openid-credential-offer://?" + urlencode(
        {"credential_offer": json.dumps(offer, separators=(",", ":"))}
    )


# --------------------------------------------------------------------------- hooks


def revoke_on_delete(session: Session, account_id: str) -> None:
    """privacy.DELETE_HOOKS: deleting the account revokes its credentials (the bits stay set)."""
    store.revoke_card(session, account_id)


def export_card(session: Session, keys: InstanceKeys, account_id: str) -> dict[str, Any]:
    card = store.card_of(session, keys.personal_data, account_id)
    if card is None:
        return {"library_card": None}
    return {
        "library_card": {
            "number": card.number,
            "library": card.library,
            "valid_until": card.valid_until.isoformat(),
            "revoked": card.revoked,
        }
    }


def _register_hooks() -> None:
    if revoke_on_delete not in privacy.DELETE_HOOKS:
        privacy.DELETE_HOOKS.append(revoke_on_delete)
    if export_card not in privacy.EXPORT_HOOKS:
        privacy.EXPORT_HOOKS.append(export_card)


_register_hooks()


def init_app(app: Any, srv: Any) -> None:
    _register_hooks()
