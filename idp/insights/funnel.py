"""The login funnel hooks: small calls from the OIDC and login views, counters in the database.

Each authorization passes steps (docs/insights.md defines them):

    request/accepted → login_page/shown → first_factor/ok|failed → stepup/asked (method)
    → stepup/done|failed → consent/shown → consent/given|refused → code/issued → code/redeemed

*Once per authorization*: which (step, outcome, method) an authorization has already counted is
kept with the authorization itself — the pending authorization in the browser session
(``LoginSession.pending``, key ``fn``), which exists anyway and goes when the session goes. No
new table, nothing that names a person: the state holds the service, the level asked, the
language and the codes of the steps counted. A retried password counts ``first_factor/failed``
once and ``first_factor/ok`` once.

*Abandoned*: a flow that stops is counted ``<last step>/abandoned`` when its browser session
expires (the background purge, :func:`count_expired`), or at once when the same browser starts
another authorization (the pending one is replaced and can no longer finish).

Increments cost the request a dict update: they are collected in the request (``g``), handed to
the process's buffer when the request ends whatever its outcome (a refused password answers 401:
its count stays), and written by the background duty every tick as one upsert per cell
(``count = count + n``). A worker that is killed outright loses at most its last tick's counts;
a worker that stops writes them first.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from flask import current_app, g, has_request_context
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import transaction, utcnow
from idp.insights import store
from idp.insights.store import Key

# Step codes and their outcomes (the closed lists the dashboard and the export know).
REQUEST, LOGIN_PAGE, FIRST_FACTOR, STEPUP, CONSENT, CODE, TOKEN = (
    "request",
    "login_page",
    "first_factor",
    "stepup",
    "consent",
    "code",
    "token",
)
ABANDONED = "abandoned"
FUNNEL = (
    (REQUEST, "accepted"),
    (LOGIN_PAGE, "shown"),
    (FIRST_FACTOR, "ok"),
    (STEPUP, "asked"),
    (STEPUP, "done"),
    (CONSENT, "shown"),
    (CONSENT, "given"),
    (CODE, "issued"),
    (CODE, "redeemed"),
)
METHODS = {
    "pki2fa": "device",
    "device": "device",
    "webauthn": "webauthn",
    "eid": "eid",
    "password": "password",
}
LEVEL_NAMES = {1: "low", 2: "substantial", 3: "high"}
ACR_NAMES = {
    "http://eidas.europa.eu/LoA/low": "low",
    "http://eidas.europa.eu/LoA/substantial": "substantial",
    "http://eidas.europa.eu/LoA/high": "high",
}
PLATFORMS = {"android-key": "android", "apple-appattest": "ios", "software": "software"}


def level_name(level: Any) -> str:
    """A policies.Level, its number or an acr URI as low / substantial / high ("" unknown)."""
    if isinstance(level, str):
        return ACR_NAMES.get(level, "")
    try:
        return LEVEL_NAMES.get(int(level), "")
    except (TypeError, ValueError):
        return ""


def platform_of(device_type: str) -> str:
    return PLATFORMS.get(device_type, "other")


def _enabled() -> bool:
    from idp.runtime import runtime

    return bool(runtime().config.insights.funnel)


REQUEST_KEY = "_insights_counts"


class Buffer:
    """This process's increments not yet written: a dict update per counted step on the request
    path; the background duty writes them every tick (:func:`flush`), one upsert per cell."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[Key] = Counter()

    def add(self, counts: Mapping[Key, int]) -> None:
        with self._lock:
            self._counts.update(counts)

    def take(self) -> Counter[Key]:
        with self._lock:
            counts, self._counts = self._counts, Counter()
        return counts


def _buffer(app: Any) -> Buffer:
    """The app's buffer (one app per worker process; tests run several in one process)."""
    buf: Buffer = app.extensions.setdefault("cityid_insights_buffer", Buffer())
    return buf


def _queue(key: Key) -> None:
    """An increment of this request; handed to the process's buffer when the request ends
    (idp.uow.finish), dropped if the request is repeated (idp.retry: the repeat counts)."""
    counts: Counter[Key] = g.setdefault(REQUEST_KEY, Counter())
    counts[key] += 1


def hand_over() -> None:
    counts = g.pop(REQUEST_KEY, None)
    if counts:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        _buffer(app).add(counts)


def flush(app: Any) -> int:
    """Write the app's buffered increments (the background duty, every tick; a scrape of
    /metrics; the worker's stop). On a database error they stay buffered for the next try."""
    buf = _buffer(app)
    counts = buf.take()
    if not counts:
        return 0
    sessions: sessionmaker[Session] = app.extensions["cityid"].sessions
    try:
        with transaction(sessions) as s:
            store.add(s, counts)
    except Exception:
        buf.add(counts)
        raise
    return sum(counts.values())


# --------------------------------------------------------------------------- per-flow state


def _state_of(pending: str | None) -> dict[str, Any] | None:
    if not pending:
        return None
    flow = json.loads(pending).get("fn")
    return flow if isinstance(flow, dict) else None


def _flow() -> dict[str, Any] | None:
    if "_insights_flow" not in g:
        from idp import browser

        s = browser.current()
        g._insights_flow = _state_of(s.pending if s is not None else None)
    flow: dict[str, Any] | None = g._insights_flow
    return flow


def current_flow() -> dict[str, Any] | None:
    """The flow state to keep in a pending authorization written now (idp.views.oidc)."""
    return g.get("_insights_flow") if has_request_context() else None


def _key(flow: dict[str, Any], step: str, outcome: str, **dims: str) -> Key:
    return Key(
        hour=store.hour_of(utcnow()),
        service=str(flow.get("s", ""))[:64],
        step=step,
        outcome=outcome,
        level_asked=str(flow.get("la", "")),
        level_reached=dims.get("level_reached") or str(flow.get("lr", "")),
        method=dims.get("method") or str(flow.get("m", "")),
        language=str(flow.get("lang", "")),
        platform=dims.get("platform") or str(flow.get("p", "")),
    )


def _count(flow: dict[str, Any], step: str, outcome: str, **dims: str) -> bool:
    mark = f"{step}:{outcome}:{dims.get('method', '')}"
    seen: list[str] = flow.setdefault("n", [])
    if mark in seen:  # once per authorization, whatever the retries
        return False
    seen.append(mark)
    flow["last"] = step
    for short, name in (("m", "method"), ("lr", "level_reached"), ("p", "platform")):
        if dims.get(name):
            flow[short] = dims[name]
    _queue(_key(flow, step, outcome, **dims))
    return True


def _save(flow: dict[str, Any]) -> None:
    """Write the flow state into the session's pending authorization, also when the request is
    answered with an error and rolled back (its count stays, so must the mark)."""
    from idp import browser, uow

    s = browser.current()
    if s is None or not s.pending:
        return
    pending = json.loads(s.pending)
    pending["fn"] = flow
    s.pending = json.dumps(pending)
    if not g.get("_insights_failure_hook"):
        g._insights_failure_hook = True
        digest = s.id_digest

        def keep(db: Session) -> None:
            from idp.models import LoginSession

            row = db.get(LoginSession, digest)
            latest = g.get("_insights_flow")
            if row is not None and row.pending and latest is not None:
                p = json.loads(row.pending)
                p["fn"] = latest
                row.pending = json.dumps(p)

        uow.on_failure(keep)


# --------------------------------------------------------------------------- hooks


def authorization_accepted(*, service: str, level_asked: Any, language: str, new: bool) -> None:
    """/authorize accepted a request; ``new``: no pending authorization of this browser is it."""
    if not _enabled():
        return
    old = _flow()
    if not new:
        return
    if old is not None and not old.get("done") and old.get("last"):
        _queue(_key(old, str(old["last"]), ABANDONED))  # replaced: it can no longer finish
    flow: dict[str, Any] = {"s": service, "la": level_name(level_asked), "lang": language[:8], "n": []}
    g._insights_flow = flow
    _count(flow, REQUEST, "accepted")


def step(step: str, outcome: str, *, method: str = "", level_reached: str = "", platform: str = "") -> None:
    """A step of the current browser's pending authorization (nothing without one)."""
    if not has_request_context() or not _enabled():
        return
    flow = _flow()
    if flow is None or flow.get("done"):
        return
    if _count(
        flow,
        step,
        outcome,
        method=METHODS.get(method, method),
        level_reached=level_reached,
        platform=platform,
    ):
        _save(flow)


def finished() -> None:
    """The authorization ended here without a code (refused consent): nothing left to abandon."""
    if not has_request_context() or not _enabled():
        return
    flow = _flow()
    if flow is not None:
        flow["done"] = True
        _save(flow)


def token_issued(*, service: str, grant_type: str) -> None:
    """The token endpoint answered with tokens: ``code/redeemed`` for an authorization code,
    ``token/<grant type>`` for the others (refresh, client credentials)."""
    if not _enabled():
        return
    hour = store.hour_of(utcnow())
    if grant_type == "authorization_code":
        _queue(Key(hour, service[:64], CODE, "redeemed"))
    else:
        _queue(Key(hour, service[:64], TOKEN, grant_type[:20]))


# --------------------------------------------------------------------------- expiry


def abandoned_counts(pendings: Iterable[str | None]) -> Counter[Key]:
    """The ``<last step>/abandoned`` increments for the pending authorizations of expiring
    sessions (read before they are deleted)."""
    counts: Counter[Key] = Counter()
    for pending in pendings:
        try:
            flow = _state_of(pending)
        except (ValueError, AttributeError):
            continue
        if flow is None or flow.get("done") or not flow.get("last"):
            continue
        counts[_key(flow, str(flow["last"]), ABANDONED)] += 1
    return counts


def count_expired(session: Session, now: Any) -> int:
    """Called by the background purge before it deletes expired browser sessions."""
    from idp.models import LoginSession

    rows = session.execute(
        select(LoginSession.pending).where(LoginSession.expires_at <= now, LoginSession.pending.is_not(None))
    ).scalars()
    counts = abandoned_counts(rows)
    store.add(session, counts)
    return sum(counts.values())
