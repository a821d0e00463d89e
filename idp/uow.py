"""One unit of work per request.

State changes commit only when the response succeeds (status < 400): bad input changes no
state. Audit records are always written: with the state on success, on their own after a
rollback otherwise. A few deliberate side effects of a refused request (revoking a token family
after a replayed code or refresh token) are registered with :func:`on_failure` and run in their
own transaction after the rollback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, request
from sqlalchemy.orm import Session

from db import audit, transaction
from idp import audit_spool, retry
from idp.insights import funnel
from idp.runtime import runtime

log = logging.getLogger("cityid")


def db() -> Session:
    if "_db" not in g:
        g._db = runtime().sessions()
    s: Session = g._db
    return s


def record(**kwargs: Any) -> None:
    """Queue an audit record; written whatever the outcome of the request."""
    g.setdefault("_audit", []).append(kwargs)


def on_failure(fn: Callable[[Session], None]) -> None:
    g.setdefault("_on_failure", []).append(fn)


def after_commit(fn: Callable[[], object]) -> None:
    """Run ``fn`` once this request's state has committed (never if it rolls back): for work
    that must not hold the transaction's locks, such as talking to the mail server."""
    g.setdefault("_after_commit", []).append(fn)


def _run_after_commit() -> None:
    for fn in g.pop("_after_commit", []):
        try:
            fn()
        except Exception:  # the state is stored; what fn does is retried elsewhere (mail outbox)
            log.exception("after-commit work failed")


def _write_audit(session: Session) -> None:
    for kw in g.get("_audit", []):
        audit.record(session, **kw)


def _not_stored(kw: dict[str, Any], exc: Exception) -> dict[str, Any]:
    reason = f"not stored ({type(exc).__name__}): {kw.get('reason', '')}"
    return {**kw, "outcome": "failure", "reason": reason[:300]}


def _rolled_back(kw: dict[str, Any]) -> dict[str, Any]:
    """A record of this request after its rollback: a success it queued did not happen."""
    if kw.get("outcome") != "success":
        return kw
    return {**kw, "outcome": "failure", "reason": f"rolled back: {kw.get('reason', '')}"[:300]}


def abandon() -> None:
    """Drop this request's unit of work without writing anything: it is about to run again
    (idp.retry), and the repeat records what it does."""
    session: Session | None = g.pop("_db", None)
    for key in ("_audit", "_on_failure", "_after_commit", funnel.REQUEST_KEY):  # the repeat counts
        g.pop(key, None)
    if session is not None:
        with contextlib.suppress(Exception):  # its connection is gone
            session.rollback()
        with contextlib.suppress(Exception):
            session.close()


def give_up() -> None:
    """The request's last attempt met a lost database connection (idp.retry): nothing of it was
    stored, and it will not run again. As after any refusal, its on_failure work and its audit
    records (a success as a failure) are written on their own, or the records wait in the spool."""
    session: Session | None = g.pop("_db", None)
    if session is not None:
        with contextlib.suppress(Exception):  # its connection is gone
            session.rollback()
        with contextlib.suppress(Exception):
            session.close()
    try:
        finish(False)
    except Exception:
        log.exception("database unreachable: the audit records of a refused request were spooled")


def finish(ok: bool) -> None:
    """End the unit of work: commit (ok) or roll back, and write the audit records either way.

    An audit entry describes what was committed: after a rollback, a ``success`` the request had
    queued (a token issued before a refresh race was lost, say) is written as a ``failure``."""
    session: Session | None = g.pop("_db", None)
    if not ok:
        g.pop("_after_commit", None)
        if "_audit" in g:
            g._audit = [_rolled_back(kw) for kw in g._audit]
    try:
        if session is not None:
            if ok:
                try:
                    _write_audit(session)
                    session.commit()
                except Exception as exc:
                    # Nothing of this request was stored: its records are kept, marked as such,
                    # for the rollback path (the caller's error handling) to write on their own,
                    # unless the request runs again (idp.retry: its connection was lost before
                    # the COMMIT), whose repeat records what it does.
                    g._commit_failed = True
                    g._audit = [_not_stored(kw, exc) for kw in g.get("_audit", [])]
                    with contextlib.suppress(Exception):
                        session.rollback()  # ends the failed transaction before the connection is reused
                    raise
                g.pop("_audit", None)
            else:
                session.rollback()
        if not ok or session is None:
            pending = g.get("_audit") or g.get("_on_failure")
            if pending:
                try:
                    with transaction(runtime().sessions) as s:
                        if not ok:
                            for fn in g.pop("_on_failure", []):
                                fn(s)
                        _write_audit(s)
                except Exception as exc:
                    # the database is out of reach: the records wait on disk (idp.audit_spool)
                    if g.get("_audit"):
                        audit_spool.spool(runtime().config.data_dir, g._audit, repr(exc))
                    g.pop("_audit", None)
                    raise
                g.pop("_audit", None)
    finally:
        funnel.hand_over()  # the login funnel's increments, whatever the outcome (idp.insights)
        if session is not None:
            session.close()


def init_app(app: Flask) -> None:
    @app.after_request
    def _commit(response: Response) -> Response:
        ok = response.status_code < 400
        try:
            finish(ok)
        except Exception as exc:
            g.pop("_db", None)
            g.pop("_after_commit", None)
            failed_commit = g.pop("_commit_failed", False)
            if failed_commit and retry.may_repeat(exc) and not request.environ.get(retry.ENVIRON_KEY):
                # the connection was lost before any COMMIT was sent (the database is restarting):
                # nothing of this request was stored; RetryOnce runs it once more, and the repeat
                # records what it does
                abandon()
                response.headers[retry.HEADER] = "1"
                return response
            raise
        _run_after_commit()
        return response

    @app.teardown_request
    def _teardown(exc: BaseException | None) -> None:
        if "_db" in g or "_audit" in g:
            finish(False)
