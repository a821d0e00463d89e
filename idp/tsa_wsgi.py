"""The time-stamp authority over HTTP (RFC 3161 §3.4) as plain WSGI, in front of Flask.

``POST /pki/tsa`` with ``Content-Type: application/timestamp-query`` and a DER TimeStampReq is
answered with ``application/timestamp-reply``. The TimeStamper (``pki.tsa``: the TSA certificate
and its key's signer) is loaded once per process and again every ``RELOAD`` (a rotated TSA
certificate is picked up without a restart). A granted token needs no database; a refusal is
a TSA error response (status rejection with failInfo, RFC 3161 §2.4.2) with HTTP 400 and an
audit entry. Everything else goes on to Flask.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

import pki
from db import audit, utcnow
from idp.ocsp_wsgi import load_issuing_ca
from pki.tsa import MAX_REQUEST, TimeStampAnswer, TimeStamper, load_time_stamper, rejection
from pki.urls import PATH_TSA

if TYPE_CHECKING:
    from idp.runtime import Runtime

log = logging.getLogger("cityid")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

QUERY = "application/timestamp-query"  # RFC 3161 §3.4
REPLY = "application/timestamp-reply"
RELOAD = dt.timedelta(minutes=10)


class TsaFastPath:
    """WSGI middleware: answers time-stamp requests itself, passes everything else to ``app``."""

    def __init__(self, app: WsgiApp, rt: Runtime, holder: dict[str, pki.CertificateAuthority]) -> None:
        self._app = app
        self.wrapped = app  # the next application inward (as the other middleware name it)
        self._rt = rt
        self._holder = holder
        self._stamper: TimeStamper | None = None
        self._loaded_at = dt.datetime.min.replace(tzinfo=dt.UTC)
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH_TSA:
            return self._app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "POST":
            start_response("405 Method Not Allowed", [("Allow", "POST"), ("Content-Length", "0")])
            return [b""]
        ctype = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if ctype != QUERY:  # RFC 3161 §3.4: the query is sent as application/timestamp-query
            return self._refuse(
                start_response,
                "415 Unsupported Media Type",
                rejection("bad_request", f"Content-Type must be {QUERY}"),
                environ,
            )
        der = _body(environ)
        if der is None:
            return self._refuse(
                start_response,
                "413 Content Too Large",
                rejection("bad_request", "request too large"),
                environ,
            )
        stamper = self._current()
        if stamper is None:
            # RFC 3161 §2.4.2: systemFailure; HTTP 503 so that a client retries later
            answer = rejection("system_failure", "the time-stamp authority is not available")
            return _reply(start_response, "503 Service Unavailable", answer.der)
        answer = stamper.respond(der)
        if not answer.granted:
            return self._refuse(start_response, "400 Bad Request", answer, environ)
        return _reply(start_response, "200 OK", answer.der)

    def _current(self) -> TimeStamper | None:
        now = utcnow()
        if self._stamper is not None and now - self._loaded_at < RELOAD and self._stamper.tsa.not_after > now:
            return self._stamper
        with self._lock:
            try:
                ca = load_issuing_ca(self._rt, self._holder)
                with self._rt.sessions() as session:
                    self._stamper = load_time_stamper(session, ca, now=now)
                self._loaded_at = now
            except (pki.PkiError, SQLAlchemyError):
                log.exception("TSA: cannot load the time-stamping certificate or key")
                if self._stamper is not None and self._stamper.tsa.not_after > now:
                    return self._stamper  # keep serving with the one loaded before
                return None
        return self._stamper

    def _refuse(
        self, start_response: StartResponse, status: str, answer: TimeStampAnswer, environ: dict[str, Any]
    ) -> list[bytes]:
        try:
            with self._rt.sessions() as session:
                audit.record(
                    session,
                    action="pki.tsa.request",
                    outcome="denied",
                    actor=str(environ.get("REMOTE_ADDR", ""))[:64],
                    reason=answer.reason,
                    details={"fail_info": answer.fail_info},
                )
                session.commit()
        except SQLAlchemyError:
            log.exception("TSA: cannot write the audit entry of a refusal")
        return _reply(start_response, status, answer.der)


def _body(environ: dict[str, Any]) -> bytes | None:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_REQUEST:
        return None
    stream = environ["wsgi.input"]
    if length > 0:
        return bytes(stream.read(length))
    data = stream.read(MAX_REQUEST + 1)  # no Content-Length (chunked): read at most the limit
    return None if len(data) > MAX_REQUEST else bytes(data)


def _reply(start_response: StartResponse, status: str, body: bytes) -> list[bytes]:
    start_response(
        status,
        [
            ("Content-Type", REPLY),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),  # every token is for one request
            ("X-Content-Type-Options", "nosniff"),
        ],
    )
    return [body]
