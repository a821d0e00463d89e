"""A demo relying service, mounted only by `cityid demo`: it logs in through cityid itself."""

from __future__ import annotations

import json
import secrets
from typing import Any

from authlib.integrations.flask_client import OAuth
from flask import Blueprint, Flask, abort, redirect, render_template, request, session, url_for

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


@bp.get("/")
def home() -> Any:
    return render_template("demo.html", user=session.get("demo_user"), csrf_token=_csrf_token())


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
