"""The eID step (level *high*): start the configured connector, take its callback, link the
eID to the account and record the factor. Also registers the eID account facts and the
``verified_claims`` claims (OpenID Connect for Identity Assurance 1.0).

Flow (three requests, so that a cross-site SAML POST, which carries no SameSite=Lax cookie,
never needs the browser session):

1. ``POST /login/eid`` (CSRF-protected): the connector's secrets are sealed server-side in
   ``eid_pending``, bound to this browser session; the browser goes to the eID service.
2. ``GET|POST /login/eid/callback``: found by its state (``RelayState`` / ``state``), the
   response is verified by the connector; the sealed result waits in the pending row, with the
   digest of a one-time handover secret that goes only to the browser that delivered it.
3. ``GET /login/eid/complete?state&handover``: only that browser, and only if it is also the
   browser session that started the login, may complete it: link (or log in by) the eID and
   continue the pending authorization. The state alone is no proof: it is in the SAML form and
   the upstream URL, so whoever starts a login could get a card holder to authenticate it.

First eID use (docs/levels.md): an eID is linked to an account that is already logged in
(password on a verified e-mail address). An eID nobody linked yet cannot create an account:
every level needs a verified e-mail address (policies: ``email_unverified`` refuses all
levels) and accounts are found by their e-mail address.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import defaultdict
from typing import Any
from urllib.parse import urlencode

import requests
from flask import Blueprint, current_app, redirect, render_template, request
from flask_babel import gettext as _
from sqlalchemy.orm import Session

from idp import browser, eid_store, levels, privacy, uow
from idp.crypto import derive_key, equal, keyed_digest, random_token
from idp.eid.connector import EidConnector, EidRequest, EidResponse, EidResult
from idp.eid.errors import EidError
from idp.insights import funnel
from idp.instance import InstanceKeys
from idp.models import Account, Client, Consent
from idp.oauth import server as oauth_server
from idp.runtime import runtime
from idp.views.account import may_change_strong_factors, notify_factor_change
from idp.views.auth import complete_step, continue_url
from policies import Level

bp = Blueprint("eid", __name__)

EID_SCOPE = "eid"  # asks for verified_claims (OIDC4IDA 1.0 §5); consent is per client + scope
ATTRIBUTES = ("given_name", "family_name", "birthdate", "place_of_birth", "nationality")
MAX_VALUE = 2048
MAX_SAML_RESPONSE = 256 * 1024


# --------------------------------------------------------------------------- connector


def _keys() -> tuple[bytes, bytes]:
    """(pseudonym index key, state digest key), derived from the instance secret."""
    cache = current_app.extensions.setdefault("cityid_eid", {})
    if "keys" not in cache:
        secret = runtime().config.secret_key
        cache["keys"] = (derive_key(secret, "eid-pseudonym-index"), derive_key(secret, "eid-state"))
    keys: tuple[bytes, bytes] = cache["keys"]
    return keys


def configured_kind() -> str | None:
    """The usable connector's name, or None (none configured, or a disabled simulator)."""
    cfg = runtime().config
    if cfg.eid_connector == "simulator":
        return "simulator" if cfg.eid_simulator_enabled is True else None
    return cfg.eid_connector if cfg.eid_connector in ("saml", "oidc") else None


# Building a connector may fetch the upstream's metadata and keys (OIDC): a failure is remembered
# for a minute (an unreachable upstream must not cost every anonymous visitor a blocked thread),
# a working connector is rebuilt hourly (the upstream rotates its keys); one build at a time.
RETRY_AFTER_FAILURE = 60.0
REBUILD_AFTER = 3600.0
_BUILDING = threading.Lock()


def _wallet() -> EidConnector | None:
    """The EU wallet route (idp.views.wallet), offered beside the ID card, or None."""
    from idp.views import wallet

    return wallet.connector() if runtime().config.wallet.enabled else None


def _connector_for(name: str) -> EidConnector | None:
    return _wallet() if name == "wallet" else connector()


def connector() -> EidConnector | None:
    cache = current_app.extensions.setdefault("cityid_eid", {})
    now = time.monotonic()
    conn, built_at = cache.get("connector", (None, None))
    fresh_for = REBUILD_AFTER if conn is not None else RETRY_AFTER_FAILURE
    if built_at is not None and now - built_at < fresh_for:
        return conn  # type: ignore[no-any-return]
    if not _BUILDING.acquire(blocking=False):  # another request is building it: use what there is
        return conn  # type: ignore[no-any-return]
    try:
        built = _build_connector()
        if built is not None:
            cache["connector"] = (built, now)
        elif conn is not None:  # the upstream is away for now: keep the working one, retry soon
            cache["connector"] = (conn, now - REBUILD_AFTER + RETRY_AFTER_FAILURE)
        else:
            cache["connector"] = (None, now)
        return cache["connector"][0]  # type: ignore[no-any-return]
    finally:
        _BUILDING.release()


class _RequestReplayStore:
    """SAML assertion IDs in this request's unit of work; kept even if the request fails."""

    def seen(self, assertion_id: str, expires: dt.datetime) -> bool:
        if eid_store.DbReplayStore(uow.db()).seen(assertion_id, expires):
            return True

        def keep(s: Session) -> None:  # after a rollback: remember the ID all the same
            eid_store.DbReplayStore(s).seen(assertion_id, expires)

        uow.on_failure(keep)
        return False


def _build_connector() -> EidConnector | None:
    cfg = runtime().config
    kind = configured_kind()
    if kind == "simulator":
        from idp.eid.simulator import SimulatorConnector

        return SimulatorConnector(
            enabled=cfg.eid_simulator_enabled,
            page_url=f"{cfg.issuer}/login/eid/simulator",
            pseudonym_key=derive_key(cfg.secret_key, "eid-simulator-pseudonym"),
            sector=cfg.eid.sector or cfg.issuer,
        )
    if kind == "saml":
        from idp.eid.saml import SamlConnector, settings_from_config

        try:
            return SamlConnector(settings_from_config(cfg), _RequestReplayStore())
        except EidError as exc:  # the metadata became unusable after the start-up check
            current_app.logger.error("eID SAML connector unavailable: %s", exc.detail)
            return None
    if kind == "oidc":
        return _oidc_connector()
    return None


def _oidc_connector() -> EidConnector | None:
    from idp.eid.oidc import EIDAS_ACRS, OidcConnector, OidcSettings

    cfg = runtime().config
    e = cfg.eid
    try:
        # OIDC Discovery §4: the upstream's metadata; its issuer must be the one configured.
        meta = requests.get(f"{e.oidc_issuer}/.well-known/openid-configuration", timeout=5).json()
        if meta.get("issuer") != e.oidc_issuer:
            raise ValueError(f"discovery names issuer {meta.get('issuer')!r}")
        jwks = requests.get(meta["jwks_uri"], timeout=5).json()
    except (requests.RequestException, ValueError, KeyError) as exc:
        current_app.logger.error("eID OIDC upstream unavailable: %s", exc)
        return None
    by_label = {level.label: level for level in Level}
    acr_levels = {acr: by_label[label] for acr, label in e.oidc_acr_levels.items() if label in by_label}
    return OidcConnector(
        OidcSettings(
            issuer=e.oidc_issuer,
            client_id=e.oidc_client_id,
            client_secret=e.oidc_client_secret,
            redirect_uri=f"{cfg.issuer}/login/eid/callback",
            authorization_endpoint=meta["authorization_endpoint"],
            token_endpoint=meta["token_endpoint"],
            jwks=jwks,
            acr_levels=acr_levels or EIDAS_ACRS,
            scope=e.oidc_scope,
        )
    )


# --------------------------------------------------------------------------- hooks


def eid_account_facts(session: Session, account_id: str) -> dict[str, Any]:
    """ACCOUNT_FACT_HOOKS: with a usable connector every account can reach *high* by eID (its
    first use links the card); without one, nobody can."""
    if configured_kind() is None and _wallet() is None:
        return {"eid_level": None}
    return {"eid_level": Level.HIGH}


def eid_verified_claims(session: Session, principal: Any, scopes: set[str]) -> dict[str, Any]:
    """CLAIM_HOOKS: ``verified_claims`` only for the ``eid`` scope the citizen consented to."""
    if EID_SCOPE not in scopes:
        return {}
    consent = session.get(Consent, (principal.account.id, principal.grant.client_id))
    if consent is None or EID_SCOPE not in consent.scope.split():
        return {}
    attrs = eid_store.verified_attributes(session, runtime().keys.personal_data, principal.account.id)
    groups: dict[tuple[str, Level, dt.datetime, bool], list[eid_store.VerifiedAttribute]] = defaultdict(list)
    for a in attrs:
        groups[(a.source, a.level, a.verified_at, a.simulation)].append(a)
    out = [_verified_claims(*key, members) for key, members in groups.items()]
    if not out:
        return {}
    return {"verified_claims": out[0] if len(out) == 1 else out}


def _verified_claims(
    source: str, level: Level, at: dt.datetime, simulation: bool, attrs: list[eid_store.VerifiedAttribute]
) -> dict[str, Any]:
    """OIDC4IDA 1.0 §5: ``verification`` (trust framework, assurance level, time, evidence)
    and the ``claims`` it covers. A simulation never claims the eIDAS trust framework."""
    claims: dict[str, Any] = {}
    for a in attrs:
        if a.name == "place_of_birth":
            claims["place_of_birth"] = {"locality": a.value}  # OIDC4IDA 1.0 §4.1
        elif a.name in ("nationality", "nationalities"):
            claims.setdefault("nationalities", []).append(a.value)  # OIDC4IDA 1.0 §4.1
        else:
            claims[a.name] = a.value
    return {
        "verification": {
            "trust_framework": "de_cityid_simulation" if simulation else "eidas",
            "assurance_level": level.label,
            "time": at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "evidence": [
                {
                    "type": "electronic_record",  # OIDC4IDA 1.0 §5.1.1.3
                    "record": {"type": "eid", "source": {"name": source}},
                }
            ],
        },
        "claims": claims,
    }


def export_eid(session: Session, keys: InstanceKeys, account_id: str) -> dict[str, Any]:
    """``idp.privacy.EXPORT_HOOKS``: the linked ID card and the attributes the eID service vouched
    for (GDPR Art. 15, 20); not the pseudonym's digest, which identifies nothing for the citizen."""
    row = eid_store.link_of_account(session, account_id)
    if row is None:
        return {"eid": None}
    attributes = eid_store.verified_attributes(session, keys.personal_data, account_id)
    return {
        "eid": {
            "connector": row.connector,
            "issuer": row.issuer,
            "level": Level(row.level).label,
            "simulation": row.simulation,
            "linked_at": row.linked_at.isoformat(),
            "last_used_at": row.last_used_at.isoformat(),
            "verified_attributes": [
                {
                    "name": a.name,
                    "value": a.value,
                    "source": a.source,
                    "level": a.level.label,
                    "verified_at": a.verified_at.isoformat(),
                }
                for a in attributes
            ],
        }
    }


def _register_hooks() -> None:
    if export_eid not in privacy.EXPORT_HOOKS:
        privacy.EXPORT_HOOKS.append(export_eid)
    if eid_account_facts not in levels.ACCOUNT_FACT_HOOKS:
        levels.ACCOUNT_FACT_HOOKS.append(eid_account_facts)
    if eid_verified_claims not in oauth_server.CLAIM_HOOKS:
        oauth_server.CLAIM_HOOKS.append(eid_verified_claims)


_register_hooks()


# --------------------------------------------------------------------------- pages


def _page(template: str, status: int = 200, **ctx: Any) -> Any:
    return render_template(template, simulation=configured_kind() == "simulator", **ctx), status


def _problem(status: int, title: str, message: str, detail: str = "", **ctx: Any) -> Any:
    return _page("eid_message.html", status, title=title, message=message, detail=detail, **ctx)


def _pending_client() -> Client | None:
    cid = request.args.get("client_id", "")[:64]
    return uow.db().get(Client, cid) if cid else None


@bp.get("/login/eid")
def start_page() -> Any:
    card, wallet = connector(), _wallet()
    if card is None and wallet is None:
        return _problem(
            404, _("eID login is not available"), _("This server does not offer login with the eID card.")
        )
    return _page(
        "eid.html",
        card=card is not None,
        wallet=wallet is not None,
        client=_pending_client(),
        account=browser.current_account(),
        csrf_token=browser.csrf_token(),
    )


@bp.post("/login/eid")
def start() -> Any:
    # before any database access: building it may fetch upstream metadata
    conn = _wallet() if request.form.get("eid") == "wallet" else connector()
    browser.check_csrf()
    if conn is None:
        return _problem(
            404, _("eID login is not available"), _("This server does not offer login with the eID card.")
        )
    client = _pending_client()
    try:
        begun = conn.start(EidRequest(minimum_level=Level.HIGH, attributes=ATTRIBUTES))
    except EidError as exc:  # e.g. the IdP metadata file was replaced by an unusable one
        uow.record(
            action="eid.start",
            outcome="denied",
            actor="anonymous",
            subject=client.client_id if client else "",
            reason=f"{exc.code}: {exc.detail}"[:300],
        )
        return _problem(503, _("eID login is not available"), _(exc.description))
    s = browser.ensure()
    state_key = _keys()[1]
    eid_store.save_pending(
        uow.db(),
        runtime().keys.personal_data,
        digest=eid_store.state_digest(state_key, begun.pending.relay_state),
        session_digest=s.id_digest,
        pending=begun.pending,
        client_id=client.client_id if client else None,
    )
    account = browser.current_account()
    uow.record(
        action="eid.start",
        outcome="info",
        actor=account.id if account else "anonymous",
        subject=client.client_id if client else "",
        reason=f"connector {conn.name}",
    )
    if begun.method == "GET":
        return redirect(begun.url)
    # SAML Bindings §3.5.4: HTTP-POST binding, a form the citizen sends on (no script: CSP).
    return _page("eid_post.html", url=begun.url, form=begun.form)


@bp.get("/eid/saml/metadata")
def saml_metadata() -> Any:
    """This SAML SP's metadata for the eID service's operators (SAML Metadata §2.4.4). Made
    from cityid's own settings only: it is served even while the IdP's metadata is unusable."""
    if configured_kind() != "saml":
        return _problem(404, _("Page not found"), _("This page does not exist."))
    cache = current_app.extensions.setdefault("cityid_eid", {})
    if "sp_metadata" not in cache:
        from idp.eid.saml import settings_from_config, sp_metadata

        cache["sp_metadata"] = sp_metadata(settings_from_config(runtime().config))
    # SAML Metadata §4.1.1: the media type application/samlmetadata+xml.
    return current_app.response_class(cache["sp_metadata"], mimetype="application/samlmetadata+xml")


@bp.get("/login/eid/simulator")
def simulator_page() -> Any:
    if configured_kind() != "simulator":
        return _problem(404, _("Page not found"), _("This page does not exist."))
    state = request.args.get("state", "")[:200]
    level = request.args.get("level", "high")[:20]
    return _page("eid_simulator.html", state=state, level=level)


def _callback_params() -> dict[str, str] | None:
    params: dict[str, str] = {}
    for key, value in request.values.items():
        # SAMLResponse; a wallet's response (OpenID4VP 1.0 §8.3.1, a JWE) or its plain vp_token
        limit = MAX_SAML_RESPONSE if key in ("SAMLResponse", "response", "vp_token") else MAX_VALUE
        if len(key) > 100 or len(value) > limit:
            return None
        params[key] = value
    return params


@bp.route("/login/eid/callback", methods=["GET", "POST"])
def callback() -> Any:
    """The connector's return (SAML ACS, OIDC redirect URI, simulator form). Found by its
    state, never by the cookie: a cross-site SAML POST carries no SameSite=Lax cookie."""
    params = _callback_params()
    state = (params or {}).get("RelayState") or (params or {}).get("state") or ""
    if request.method == "POST" and request.args.get("flow") in ("same", "cross"):
        state = request.args.get("state", "")  # a wallet's response_uri (idp.views.wallet)
    if params is None or not state or len(state) > 200:
        return _refused_callback("malformed callback parameters")
    state_key = _keys()[1]
    digest = eid_store.state_digest(state_key, state)
    sealer = runtime().keys.personal_data
    # Read the pending state in its own short transaction: the connector may call the
    # upstream (OIDC token request), and no database lock may be held meanwhile (SQLite).
    with runtime().sessions() as peek:
        found = eid_store.find_pending(peek, sealer, digest)
        answered = found is not None and found[0].result_enc is not None
        client_id = found[0].client_id if found is not None else None
        peek.rollback()
    if found is None:
        return _refused_callback("unknown or expired state")
    if answered:
        return _refused_callback("callback already answered")  # single use
    pending = found[1]
    conn = _connector_for(pending.connector)
    if conn is None or conn.name != pending.connector:
        return _refused_callback(f"connector changed to {conn.name if conn else 'none'}")
    try:
        result = conn.finish(EidResponse(params, pending))
    except EidError as exc:
        _consume_even_on_failure(digest)
        uow.record(
            action="eid.verify",
            outcome="denied",
            actor="anonymous",
            subject=client_id or "",
            reason=f"{exc.code}: {exc.detail}"[:300],
        )
        if conn.name == "wallet":
            from idp.views.wallet import wallet_error

            return wallet_error(exc.code, exc.description)
        return _problem(400, _("eID check failed"), _(exc.description))
    again = eid_store.find_pending(uow.db(), sealer, digest)
    if again is None or again[0].result_enc is not None:
        return _refused_callback("callback answered concurrently")  # single use, raced
    row = again[0]
    # The answer is handed over only to this browser (the one that went through the eID
    # service): a one-time secret in the redirect below, which /complete requires together with
    # the session that started the login. Knowing `state` (it is in the SAML form, the upstream
    # URL) must not let someone else's browser finish a login another person's card completed.
    handover = random_token(32)
    if not eid_store.claim_result(uow.db(), sealer, row, result, handover_digest=_handover_digest(handover)):
        return _refused_callback("callback answered concurrently")  # single use, raced
    uow.record(
        action="eid.verify",
        outcome="success",
        actor="anonymous",
        subject=row.client_id or "",
        reason=f"{conn.name}: {result.level.label} from {result.issuer}"[:300],
        details={"simulation": result.simulation},
    )
    if conn.name == "wallet":
        from idp.views.wallet import wallet_answer

        return wallet_answer(state, request.args.get("flow", ""), handover)
    return redirect(f"/login/eid/complete?{urlencode({'state': state, 'handover': handover})}", code=303)


def _handover_digest(handover: str) -> str:
    return keyed_digest(_keys()[1], f"eid-handover\x00{handover}")


def _refused_callback(why: str) -> Any:
    uow.record(action="eid.verify", outcome="denied", actor="anonymous", subject="", reason=why)
    if request.method == "POST" and request.args.get("flow") in ("same", "cross"):
        from idp.views.wallet import wallet_error  # to the wallet: a protocol error

        return wallet_error("invalid_state", why)
    return _problem(
        400,
        _("This eID answer cannot be used"),
        _("It is unknown, expired or was already used. Please start again from the service."),
    )


def _consume_even_on_failure(digest: str) -> None:
    eid_store.consume_pending(uow.db(), digest)

    def again(s: Session) -> None:
        eid_store.consume_pending(s, digest)

    uow.on_failure(again)


@bp.get("/login/eid/complete")
def complete() -> Any:
    state = request.args.get("state", "")[:200]
    state_key = _keys()[1]
    digest = eid_store.state_digest(state_key, state)
    sealer = runtime().keys.personal_data
    handover = request.args.get("handover", "")[:100]
    s = browser.current()
    found = eid_store.find_pending(uow.db(), sealer, digest) if state else None
    result = eid_store.result_of(sealer, found[0]) if found else None
    # The browser that went through the eID service (it holds the handover secret) must be the
    # one that started the login (its session): no login CSRF, and no relay of a card holder's
    # authentication into someone else's browser (SAML Profiles §4.1.3: the user agent that
    # presents the response is the one the security context is set up with).
    handed_over = found is not None and eid_store.handover_matches(
        sealer, found[0], _handover_digest(handover)
    )
    starter = found is not None and s is not None and equal(found[0].session_digest, s.id_digest)
    if found is None or result is None or not handed_over or not starter:
        reason = "no verified eID answer for this browser session"
        if handed_over and not starter:
            # The card holder's browser is not the one that started: someone else did and got
            # her to authenticate. The answer is spent so that the starter cannot use it either.
            _consume_even_on_failure(digest)
            reason = "eID answer relayed: it reached a browser that did not start this login"
        uow.record(action="eid.complete", outcome="denied", actor="anonymous", subject="", reason=reason)
        return _problem(
            400,
            _("This eID answer cannot be used"),
            _("It is unknown, expired or was already used. Please start again from the service."),
        )
    _consume_even_on_failure(digest)
    index_key, _sk = _keys()
    pseudonym = eid_store.pseudonym_digest(index_key, result.issuer, result.pseudonym)
    factor = "wallet" if found[1].connector == "wallet" else "eid"  # policies FactorKind
    account = browser.current_account()
    if account is None:
        return _login_by_eid(pseudonym, result, factor)
    if eid_store.link_of_account(uow.db(), account.id) is None and not may_change_strong_factors(account):
        # A first card next to a device or passkey at substantial: a password alone must not
        # link someone else's card (and with it level high) to the account.
        uow.record(
            action="eid.link",
            outcome="denied",
            actor=account.id,
            subject=account.id,
            reason="step_up_required",
        )
        return _problem(
            403,
            _("Please confirm it is you first"),
            _(
                "To link an ID card to this account, first log in with your device or security key "
                "(within the last ten minutes), then use the ID card."
            ),
        )
    try:
        _link, created = eid_store.link(
            uow.db(),
            sealer,
            account_id=account.id,
            digest=pseudonym,
            connector=str(found[1].connector),
            result=result,
        )
    except eid_store.LinkRefused as exc:
        funnel.step(funnel.STEPUP, "failed", method="eid")
        uow.record(action="eid.link", outcome="denied", actor=account.id, subject=account.id, reason=exc.code)
        return _problem(
            403,
            _("This eID cannot be used with this account"),
            _(
                "This ID card is already linked to another account, or this account to another ID "
                "card. Log in with the account that belongs to this ID card."
            ),
            detail=exc.code,
        )
    uow.record(
        action="eid.link",
        outcome="success",
        actor=account.id,
        subject=account.id,
        reason=("linked" if created else "confirmed") + f" at {result.level.label}",
        details={"simulation": result.simulation, "issuer": result.issuer},
    )
    if created:
        notify_factor_change(account, _("An ID card was linked to your account."))
    return complete_step(factor, int(result.level), method=factor)


def _login_by_eid(pseudonym: str, result: EidResult, factor: str = "eid") -> Any:
    """No one is logged in: the eID logs in the account it is linked to, if any."""
    row = eid_store.link_by_pseudonym(uow.db(), pseudonym)
    account = uow.db().get(Account, row.account_id) if row is not None else None
    if account is None or account.disabled or account.email_verified_at is None:
        uow.record(
            action="login.eid",
            outcome="denied",
            actor="anonymous",
            subject=account.id if account else "",
            reason="no usable account linked to this eID",
        )
        return _problem(
            403,
            _("No account is linked to this ID card yet"),
            _(
                "Log in with your e-mail address and password first; then confirm with your ID "
                "card to link it to your account. After that you can log in with the ID card alone."
            ),
            link="/login",
            link_text=_("Log in"),
        )
    eid_store.link(
        uow.db(),
        runtime().keys.personal_data,
        account_id=account.id,
        digest=pseudonym,
        connector=row.connector if row else "",
        result=result,
    )
    target = continue_url()
    browser.log_in(account, factor, int(result.level))
    uow.record(
        action="login.eid",
        outcome="success",
        actor=account.id,
        subject=account.id,
        reason=f"eID at {result.level.label}",
        details={"simulation": result.simulation},
    )
    return redirect(target)


def _eid_login() -> dict[str, Any]:
    # The login page offers the ID card alone (docs/levels.md) where a connector is usable.
    return {"eid_login_available": configured_kind() is not None or bool(runtime().config.wallet.enabled)}


def init_app(app: Any, srv: Any) -> None:
    _register_hooks()
    app.context_processor(_eid_login)
