"""A demo relying service, mounted only by `cityid demo`: it logs in through cityid itself."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any

from authlib.integrations.flask_client import OAuth
from flask import Blueprint, Flask, abort, redirect, render_template, request, session, url_for
from flask_babel import gettext as _

from idp.crypto import equal
from idp.demo import DEMO_CLIENT
from idp.runtime import runtime

bp = Blueprint("demo", __name__, url_prefix="/demo")


def init_demo(app: Flask) -> None:
    cfg = runtime_cfg(app)
    demo = json.loads((cfg.data_dir / "demo.json").read_text())
    from idp.crypto import derive_key

    app.secret_key = derive_key(cfg.secret_key, "demo-relying-party-cookie")
    app.config["SESSION_COOKIE_NAME"] = "demo_rp"
    oauth = OAuth(app)
    oauth.register(
        "cityid",
        client_id=DEMO_CLIENT,
        client_secret=demo["client_secret"],
        server_metadata_url=f"{cfg.issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256"},
    )
    app.extensions["demo_oauth"] = oauth
    app.register_blueprint(bp)


def runtime_cfg(app: Flask) -> Any:
    return app.extensions["cityid"].config


def _client() -> Any:
    from flask import current_app

    return current_app.extensions["demo_oauth"].cityid


def _csrf_token() -> str:
    if "demo_csrf" not in session:
        session["demo_csrf"] = secrets.token_urlsafe(32)
    return str(session["demo_csrf"])


# The ID token claims the demo explains (OIDC Core §2, §5.1; RFC 8176), in the order shown.
TIME_CLAIMS = ("auth_time", "iat", "exp")


def _claim_meanings() -> dict[str, str]:
    return {
        "sub": _("Your identifier at this service (pairwise: other services see another one)"),
        "email": _("E-mail address"),
        "email_verified": _("E-mail address confirmed"),
        "locale": _("Language"),
        "acr": _("Level of assurance reached"),
        "amr": _("How you logged in (RFC 8176: pwd password, hwk device key, sc + pin ID card)"),
        "auth_time": _("Logged in at"),
        "iat": _("ID token issued at"),
        "exp": _("ID token valid until"),
        "iss": _("Issued by"),
        "aud": _("Issued to (this service's client_id)"),
        "sid": _("Login session"),
        "nonce": _("Nonce (ties the ID token to this login)"),
    }


def _display(name: str, value: Any) -> str:
    """A claim's value as a citizen reads it: times as local dates, lists joined, yes/no."""
    from idp.views.account import local_time

    if name in TIME_CLAIMS and isinstance(value, int | float) and not isinstance(value, bool):
        return local_time(dt.datetime.fromtimestamp(value, dt.UTC))
    if isinstance(value, bool):
        return str(_("yes") if value else _("no"))
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def claims_table(claims: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(claim, meaning, value) rows: the explained claims first, then any others."""
    meanings = _claim_meanings()
    names = [n for n in meanings if n in claims] + sorted(n for n in claims if n not in meanings)
    return [(n, meanings.get(n, ""), _display(n, claims[n])) for n in names if n != "at_hash"]


@bp.get("/")
def home() -> Any:
    user = session.get("demo_user")
    return render_template(
        "demo.html",
        user=user,
        rows=claims_table(user["claims"]) if user else [],
        account_url=f"{runtime().config.issuer}/account",
        csrf_token=_csrf_token(),
    )


@bp.get("/login")
def login() -> Any:
    return _client().authorize_redirect(url_for("demo.callback", _external=True))


@bp.get("/callback")
def callback() -> Any:
    token = _client().authorize_access_token()
    session["demo_user"] = {"claims": dict(token["userinfo"]), "id_token": token["id_token"]}
    return redirect(url_for("demo.home"))


@bp.post("/logout")
def logout() -> Any:
    sent = request.form.get("csrf_token", "")
    expected = session.get("demo_csrf", "")
    if not sent or not expected or not equal(sent, expected):
        abort(400, "csrf")  # another site cannot log the demo visitor out
    user = session.pop("demo_user", None)
    iss = runtime().config.issuer
    if user:
        from urllib.parse import urlencode

        q = urlencode({"id_token_hint": user["id_token"], "post_logout_redirect_uri": f"{iss}/demo/"})
        return redirect(f"{iss}/logout?{q}")
    return redirect(url_for("demo.home"))


@bp.post("/backchannel-logout")
def backchannel_logout() -> Any:
    return "", 200
