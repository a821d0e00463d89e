"""A request that met a lost database connection before anything of it committed is run again,
once: a database restart or a failover of a fraction of a second is invisible to clients.

Safe only because nothing was stored: every commit attempted in the request (the unit of work's,
or a ``db.transaction`` of its own, such as the password throttle's) marks it, and a marked request
is never repeated (a connection lost during COMMIT leaves unknown whether it committed). Flask
paths are repeated by :class:`RetryOnce` around the WSGI app, which keeps the request body (bodies
are limited to 1 MiB there) and asks for the repeat through a response header that never leaves
the process; the token endpoint repeats in place (idp.oauth.token_endpoint).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import g, has_app_context
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("cityid")

HEADER = "X-Cityid-Retry"  # internal: set by the error handler, removed by RetryOnce
ENVIRON_KEY = "cityid.retried"  # set on a request's last attempt (the repeat, or one never repeated)
DELAY_SECONDS = 0.3  # a restarted PostgreSQL accepted connections again after 0.19 s (issue 19)
# ... but a restart on a busy machine, or a failover to a standby, takes longer (bench/faults.py:
# `pg_ctl restart -m fast` 1-2 s): before the repeat, wait until the database answers again, up
# to this long; the client sees a slower answer instead of an error.
WAIT_SECONDS = 10.0
PROBE_SECONDS = 0.2


def wait_for_database(engine: Any) -> None:
    """Pause before a repeat: DELAY_SECONDS, then until ``engine`` connects (WAIT_SECONDS at most)."""
    deadline = time.monotonic() + WAIT_SECONDS
    time.sleep(DELAY_SECONDS)
    while time.monotonic() < deadline:
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return
        except DBAPIError:
            time.sleep(PROBE_SECONDS)


MAX_BODY = 1024 * 1024  # Flask's MAX_CONTENT_LENGTH: a larger body is refused anyway


def lost_connection(exc: BaseException) -> bool:
    """A connection-level database error (the server went away, restarted, or refused a
    serialisation): the transaction it hit was rolled back by the server."""
    return isinstance(exc, DBAPIError) and (exc.connection_invalidated or isinstance(exc, OperationalError))


def may_repeat(exc: BaseException) -> bool:
    """``exc`` ended this request before any commit was attempted: running it again is safe."""
    return lost_connection(exc) and not g.get("_db_commit_attempted", False)


def track_commits(sessions: sessionmaker[Session]) -> None:
    """Mark the request whenever a COMMIT is about to be sent on one of its connections.

    Done by the engine's dialect, which sends every COMMIT (``do_commit``), wrapped here once per
    engine: no SQLAlchemy event. A connection event (``commit``) made SQLAlchemy dispatch its
    execution events around every statement of every request, listened to or not.

    Not the session's ``before_commit``: that fires before the session's flush and before it has
    a connection at all, so a request whose first database work is its commit (a page that
    stores only its session row) and meets a database that is shutting down (connection refused
    while flushing) was marked, and answered 500, though nothing could have been stored
    (bench/faults.py, PostgreSQL restart)."""
    dialect = sessions.kw["bind"].dialect
    if getattr(dialect.do_commit, "_marks_requests", False):
        return  # this engine's COMMITs are marked already (another app on the same engine)
    send_commit = dialect.do_commit

    def do_commit(dbapi_connection: Any) -> None:
        if has_app_context():
            g._db_commit_attempted = True
        send_commit(dbapi_connection)

    do_commit._marks_requests = True  # type: ignore[attr-defined]
    dialect.do_commit = do_commit


class RetryOnce:
    """WSGI middleware: repeat a request once when the app answers with :data:`HEADER`."""

    def __init__(self, app: Callable[..., Iterable[bytes]], engine: Any) -> None:
        self.wrapped = app  # the next application inward (as the other middleware name it)
        self.engine = engine

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY or environ.get("HTTP_TRANSFER_ENCODING"):
            # cannot be replayed (refused further in anyway): its only attempt is its last, so
            # its audit records are kept and the internal header is never set
            environ[ENVIRON_KEY] = True
            return self.wrapped(environ, start_response)
        body = environ["wsgi.input"].read(length) if length else b""
        for attempt in (1, 2):
            env = dict(environ)
            env["wsgi.input"] = io.BytesIO(body)
            env["CONTENT_LENGTH"] = str(len(body)) if length else environ.get("CONTENT_LENGTH", "")
            if attempt == 2:
                env[ENVIRON_KEY] = True
            answer: dict[str, Any] = {}

            def capture(
                status: str, headers: list[tuple[str, str]], exc_info: Any = None, _into: Any = answer
            ) -> Any:
                _into.update(status=status, headers=headers, exc_info=exc_info)
                return lambda _data: None  # the write() callable; Flask never uses it

            result = self.wrapped(env, capture)
            headers = answer["headers"]
            if any(k.lower() == HEADER.lower() for k, _ in headers):
                if attempt == 1:
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
                    log.warning("database connection lost before any commit: request repeated once")
                    wait_for_database(self.engine)
                    continue
                headers = [(k, v) for k, v in headers if k.lower() != HEADER.lower()]
            start_response(answer["status"], headers, answer["exc_info"])
            return result
        raise AssertionError("unreachable")
