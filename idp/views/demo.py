"""A demo relying service, mounted only by `cityid demo`: it logs in through cityid itself."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any

from authlib.integrations.flask_client import OAuth
from flask import Blueprint, Flask, Response, abort, redirect, render_template, request, session, url_for
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
        sign_ready="demo_sign_token" in session,
        sign_request=session.get("demo_sign_request"),
        sign_error=session.pop("demo_sign_error", None),
        waiting=request.args.get("sign") == "waiting",
    )


@bp.get("/login")
def login() -> Any:
    return _client().authorize_redirect(url_for("demo.callback", _external=True))


@bp.get("/callback")
def callback() -> Any:
    token = _client().authorize_access_token()
    session["demo_user"] = {"claims": dict(token["userinfo"]), "id_token": token["id_token"]}
    if "sign" in str(token.get("scope", "")).split():
        # the access token for the signing API; kept in the demo's own session cookie only
        session["demo_sign_token"] = token["access_token"]
        return redirect(url_for("demo.home", sign="ready"))
    return redirect(url_for("demo.home"))


# ----------------------------------------------------------------------------- "sign this form"


def _check_csrf() -> None:
    sent = request.form.get("csrf_token", "")
    expected = session.get("demo_csrf", "")
    if not sent or not expected or not equal(sent, expected):
        abort(400, "csrf")


def demo_form_pdf(name: str) -> bytes:
    """The demo's application form: one A4 page of text (Helvetica, WinAnsi), made here."""
    import io

    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.writer import PdfFileWriter

    def esc(text: str) -> bytes:
        raw = text.encode("cp1252", "replace")
        return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")

    lines = [
        (18, "Antrag auf Bewohnerparkausweis"),
        (11, "Demo-B\u00fcrgerservice Musterstadt"),
        (11, ""),
        (11, f"Antragsteller/in: {name}"),
        (11, "Stra\u00dfe: Musterweg 1, 12345 Musterstadt"),
        (11, "Kennzeichen: M-ST 2026"),
        (11, ""),
        (11, "Ich beantrage einen Bewohnerparkausweis f\u00fcr die Zone A."),
        (11, "Mit meiner elektronischen Signatur best\u00e4tige ich die Angaben."),
    ]
    ops = [b"BT", b"72 770 Td"]
    for size, text in lines:
        ops += [f"/F1 {size} Tf".encode(), b"(" + esc(text) + b") Tj", b"0 -22 Td"]
    ops.append(b"ET")
    w = PdfFileWriter(stream_xrefs=False)
    font = w.add_object(
        generic.DictionaryObject(
            {
                generic.NameObject("/Type"): generic.NameObject("/Font"),
                generic.NameObject("/Subtype"): generic.NameObject("/Type1"),
                generic.NameObject("/BaseFont"): generic.NameObject("/Helvetica"),
                generic.NameObject("/Encoding"): generic.NameObject("/WinAnsiEncoding"),
            }
        )
    )
    contents = w.add_object(generic.StreamObject(stream_data=b"\n".join(ops)))
    page = generic.DictionaryObject(
        {
            generic.NameObject("/Type"): generic.NameObject("/Page"),
            generic.NameObject("/MediaBox"): generic.ArrayObject(
                [generic.NumberObject(n) for n in (0, 0, 595, 842)]
            ),
            generic.NameObject("/Resources"): generic.DictionaryObject(
                {generic.NameObject("/Font"): generic.DictionaryObject({generic.NameObject("/F1"): font})}
            ),
            generic.NameObject("/Contents"): contents,
        }
    )
    w.insert_page(page)
    w._info = w.add_object(  # the title the citizen's device shows
        generic.DictionaryObject(
            {generic.NameObject("/Title"): generic.TextStringObject("Antrag auf Bewohnerparkausweis")}
        )
    )
    out = io.BytesIO()
    w.write(out)
    return out.getvalue()


def _api(method: str, path: str, **kw: Any) -> Any:
    import requests

    token = session.get("demo_sign_token", "")
    headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
    return requests.request(method, f"{runtime().config.issuer}{path}", headers=headers, timeout=60, **kw)


@bp.post("/sign")
def sign() -> Any:
    """ "Sign this form": with a token for scope ``sign`` (a login at substantial: the device
    confirms), post the form to cityid; the citizen's device then shows it and signs."""
    _check_csrf()
    if "demo_sign_token" not in session:
        return _client().authorize_redirect(
            url_for("demo.callback", _external=True), scope="openid profile email sign"
        )
    user = session.get("demo_user") or {}
    name = str((user.get("claims") or {}).get("email", "Demo-B\u00fcrgerin"))
    r = _api("POST", "/api/signatures", data=demo_form_pdf(name), headers={"Content-Type": "application/pdf"})
    if r.status_code == 401:  # the token expired or ended: log in for signing again
        session.pop("demo_sign_token", None)
        return _client().authorize_redirect(
            url_for("demo.callback", _external=True), scope="openid profile email sign"
        )
    body = r.json()
    if r.status_code != 201:
        session["demo_sign_error"] = str(body.get("error_description", body.get("error", "")))
        return redirect(url_for("demo.home"))
    session["demo_sign_request"] = {"id": body["id"], "document": body["document"]}
    session.pop("demo_sign_error", None)
    return redirect(url_for("demo.home"))


@bp.post("/sign/result")
def sign_result() -> Any:
    _check_csrf()
    pending = session.get("demo_sign_request")
    if not pending:
        return redirect(url_for("demo.home"))
    r = _api("GET", f"/api/signatures/{pending['id']}")
    if r.status_code == 200 and r.headers.get("Content-Type", "").startswith("application/pdf"):
        session.pop("demo_sign_request", None)
        resp = Response(r.content, mimetype="application/pdf")
        resp.headers["Content-Disposition"] = 'attachment; filename="antrag-signiert.pdf"'
        return resp
    status = r.json().get("status") or r.json().get("error", "")
    if status != "pending":
        session.pop("demo_sign_request", None)
        session["demo_sign_error"] = str(status)
    return redirect(url_for("demo.home", sign="waiting"))


@bp.post("/logout")
def logout() -> Any:
    sent = request.form.get("csrf_token", "")
    expected = session.get("demo_csrf", "")
    if not sent or not expected or not equal(sent, expected):
        abort(400, "csrf")  # another site cannot log the demo visitor out
    user = session.pop("demo_user", None)
    session.pop("demo_sign_token", None)
    session.pop("demo_sign_request", None)
    iss = runtime().config.issuer
    if user:
        from urllib.parse import urlencode

        q = urlencode({"id_token_hint": user["id_token"], "post_logout_redirect_uri": f"{iss}/demo/"})
        return redirect(f"{iss}/logout?{q}")
    return redirect(url_for("demo.home"))


@bp.post("/backchannel-logout")
def backchannel_logout() -> Any:
    return "", 200
