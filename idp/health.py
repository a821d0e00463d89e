"""``GET /health`` for load balancers, and the drain that precedes a graceful stop.

``/health`` answers ``200 ok`` while this instance takes requests and ``503 draining`` once
`cityid serve` got SIGTERM and is draining (``--drain-seconds``, idp.serve): a load balancer that
checks it more often than the drain lasts takes the instance out of its rotation while every other
request is still served normally; then the server stops gracefully (accepted requests finish,
background duties end, exit 0). So a rolling restart of all instances loses no request
(bench/faults.py ``--profile rolling``).

The answer is the process's own state only: no session, no cookie, no database. A check that
queried the database would take every instance out of rotation at once during a database
restart, which idp.retry rides out for requests anyway. It is WSGI middleware ahead of Flask
(as idp.static_docs), so a check costs a dictionary lookup and a shared-memory read; RFC 9110
§15.6.4: 503 means "temporarily unable", with ``Retry-After`` (§10.2.3).

The drain flag is one byte of shared memory (``multiprocessing.RawValue``) that `cityid serve`'s
main process creates *before* granian forks its workers: each worker inherits the same mapping, so
the main process's signal handler setting it is seen by every worker at once, with no pipe, file or
signal to forward (a worker respawned during the drain inherits it too). A process that never
called :func:`prepare` (tests, gunicorn, the demo) is never draining.
"""

from __future__ import annotations

import ctypes
import multiprocessing
from collections.abc import Callable, Iterable
from typing import Any

from flask import Response

HEALTH_PATH = "/health"

_flag: Any = None  # multiprocessing.RawValue(c_bool) shared with the forked workers, or None


def prepare() -> None:
    """Create the shared drain flag; call before the workers are forked."""
    global _flag
    if _flag is None:
        _flag = multiprocessing.RawValue(ctypes.c_bool, False)


def start_drain() -> None:
    """From now on ``/health`` answers 503 in this process and every worker forked from it."""
    prepare()
    _flag.value = True


def draining() -> bool:
    return _flag is not None and bool(_flag.value)


def _prepared(
    finish: Callable[[Response], Response], status: int, body: bytes
) -> tuple[str, list[tuple[str, str]], bytes]:
    resp = Response(body, status=status, mimetype="text/plain")
    resp.headers["Cache-Control"] = "no-store"  # a cached 200 would hide the drain (RFC 9111 §5.2.2.5)
    if status == 503:
        resp.headers["Retry-After"] = "5"
    resp = finish(resp)  # the headers every response gets (idp.app)
    resp.headers["Content-Length"] = str(len(body))
    return resp.status, resp.headers.to_wsgi_list(), body


class Health:
    """WSGI middleware: GET and HEAD of ``/health``; everything else to the wrapped app."""

    def __init__(
        self, wrapped: Callable[..., Iterable[bytes]], finish: Callable[[Response], Response]
    ) -> None:
        self.wrapped = wrapped
        self.ok = _prepared(finish, 200, b"ok\n")
        self.draining = _prepared(finish, 503, b"draining\n")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != HEALTH_PATH or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return self.wrapped(environ, start_response)
        status, headers, body = self.draining if draining() else self.ok
        start_response(status, list(headers))
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]
