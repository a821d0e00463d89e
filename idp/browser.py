"""Browser sessions at the IdP: server-side rows, a random cookie, CSRF tokens.

The cookie carries a 256-bit random token; the database keeps only its keyed digest. The
session id is rotated at every login (session fixation). Cookies are HttpOnly, SameSite=Lax and
Secure except on plain-http loopback (development).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, abort, g, request
from sqlalchemy import delete

from db import utcnow
from idp import uow
from idp.config import LOOPBACK_HOSTS
from idp.crypto import equal, keyed_digest, random_token
from idp.instance import InstanceKeys
from idp.models import Account, LoginSession
from idp.runtime import runtime
from policies import Level

# An anonymous session holds a form's CSRF secret (and a service's waiting sign-in): a form
# left open over lunch or overnight must still be sendable (WCAG 2.1 2.2.1, at least 20 hours
# without warning). Showing a form renews it (``csrf_token``).
ANON_LIFETIME = dt.timedelta(hours=24)
_RENEW_AFTER = dt.timedelta(hours=1)  # renewed at most hourly: not a write on every page view

# Forms that are shown again, with what was entered (never passwords), when their session had
# expired: endpoint -> view that renders the form from the sent values (see ``FormExpired``).
FORM_REFILL: dict[str, Callable[[Mapping[str, str]], Any]] = {}


class FormExpired(Exception):
    """A form came back with a CSRF token whose browser session no longer exists (expired)."""


def cookie_name() -> str:
    return "__Host-cityid" if _secure() else "cityid"


def _secure() -> bool:
    parts = urlsplit(runtime().config.issuer)
    return not (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)


def _keys() -> InstanceKeys:
    return runtime().keys


def current() -> LoginSession | None:
    """The browser's session, if its cookie names a live one."""
    if "_login_session" in g:
        s: LoginSession | None = g._login_session
        return s
    token = request.cookies.get(cookie_name(), "")
    row = None
    if token and len(token) <= 100:
        row = uow.db().get(LoginSession, _keys().token_digest(token))
        if row is not None and row.expires_at <= utcnow():
            row = None
    g._login_session = row
    return row


def ensure() -> LoginSession:
    """The browser's session, created (anonymous, short-lived) if it has none."""
    row = current()
    if row is None:
        row = _new(account_id=None, lifetime=ANON_LIFETIME)
    return row


def _new(*, account_id: str | None, lifetime: dt.timedelta) -> LoginSession:
    token = random_token(32)
    row = LoginSession(
        id_digest=_keys().token_digest(token),
        account_id=account_id,
        expires_at=utcnow() + lifetime,
        csrf_secret=random_token(32),
        factors="{}",
    )
    uow.db().add(row)
    g._login_session = row
    g._set_cookie = (token, lifetime)
    return row


def current_account() -> Account | None:
    s = current()
    if s is None or s.account_id is None:
        return None
    acct = uow.db().get(Account, s.account_id)
    if acct is None or acct.disabled:
        return None
    return acct


def factors(s: LoginSession | None) -> dict[str, list[int | None]]:
    """The session's factors: kind (RFC 8176 amr) -> [unix time, level or None]."""
    if s is None or s.account_id is None:
        return {}
    f: dict[str, list[int | None]] = json.loads(s.factors)
    return f


def log_in(account: Account, factor: str, level: int | None = None) -> LoginSession:
    """Start an authenticated session (new cookie token and id: session fixation), carrying
    over a pending authorization; within the same account, its factors and OIDC `sid` too."""
    old = current()
    pending = old.pending if old is not None else None
    locale = old.locale if old is not None else None
    keep: dict[str, list[int | None]] = {}
    sid = None
    if old is not None and old.account_id == account.id:
        keep = factors(old)  # stepping up: the earlier factors stay, with their own times
        # ... and so does the OIDC session id: services that got ID tokens before the step-up
        # are logged out with this session (Back-Channel Logout §2.4 `sid`)
        sid = old.sid
    if old is not None:
        uow.db().delete(old)
        uow.db().flush()  # the old row (and its unique sid) is gone before the new one is written
    lifetime = dt.timedelta(minutes=runtime().config.session_lifetime_minutes)
    row = _new(account_id=account.id, lifetime=lifetime)
    if sid is not None:
        row.sid = sid
    keep[factor] = [int(time.time()), level]
    row.factors = json.dumps(keep)
    row.pending = pending
    row.locale = locale
    return row


# A factor above `low` (ID card, enrolled device, attested passkey) this recent confirms who is
# acting without the password (an account used with the ID card alone may have none its owner
# remembers). Re-authentication before a sensitive or irreversible action: NIST SP 800-63B §7.2.
RECENT_STRONG_FACTOR_SECONDS = 10 * 60


def recent_strong_factor() -> str | None:
    """The kind of a factor of level *substantial* or above used in the last ten minutes."""
    now = time.time()
    for kind, (at, level) in factors(current()).items():
        if at is not None and level is not None and level >= Level.SUBSTANTIAL:
            if 0 <= now - at <= RECENT_STRONG_FACTOR_SECONDS:
                return kind
    return None


def add_factor(s: LoginSession, factor: str, level: int | None = None) -> None:
    """Record a further factor (step-up) in the same session."""
    f = factors(s)
    f[factor] = [int(time.time()), level]
    s.factors = json.dumps(f)


def log_out() -> LoginSession | None:
    s = current()
    if s is not None:
        uow.db().delete(s)
    g._login_session = None
    g._clear_cookie = True
    return s


def csrf_token() -> str:
    s = ensure()
    if s.account_id is None and "_set_cookie" not in g:
        _renew_anonymous(s)
    return keyed_digest(_keys().csrf, s.csrf_secret)


def _renew_anonymous(s: LoginSession) -> None:
    """A form is shown: its anonymous session lives ``ANON_LIFETIME`` from now (WCAG 2.2.1)."""
    now = utcnow()
    if s.expires_at - now > ANON_LIFETIME - _RENEW_AFTER:
        return
    token = request.cookies.get(cookie_name(), "")
    if not token:
        return
    s.expires_at = now + ANON_LIFETIME
    g._set_cookie = (token, ANON_LIFETIME)


def check_csrf() -> None:
    """Synchroniser token (OWASP CSRF cheat sheet), bound to this browser session."""
    s = current()
    sent = request.form.get("csrf_token", "")
    if s is None or not sent or not equal(sent, keyed_digest(_keys().csrf, s.csrf_secret)):
        # a token of ours (an HMAC-SHA256, hex) whose session has gone meanwhile
        expired = s is None and re.fullmatch(r"[0-9a-f]{64}", sent) is not None
        uow.record(
            action="csrf.reject",
            outcome="denied",
            actor="anonymous",
            subject=request.path,
            reason="form session expired" if expired else "missing or invalid CSRF token",
        )
        if expired and request.endpoint in FORM_REFILL:
            raise FormExpired()
        abort(400, description="csrf")


def purge_expired() -> int:
    res = uow.db().execute(delete(LoginSession).where(LoginSession.expires_at <= utcnow()))
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


def init_app(app: Flask) -> None:
    @app.after_request
    def _cookie(response: Response) -> Response:
        secure = _secure()
        if g.pop("_clear_cookie", False) and "_set_cookie" not in g:
            response.delete_cookie(cookie_name(), path="/", secure=secure, httponly=True, samesite="Lax")
        set_cookie = g.pop("_set_cookie", None)
        if set_cookie is not None and response.status_code < 400:
            token, lifetime = set_cookie
            response.set_cookie(
                cookie_name(),
                token,
                max_age=int(lifetime.total_seconds()),
                path="/",
                secure=secure,
                httponly=True,
                samesite="Lax",
            )
        return response
