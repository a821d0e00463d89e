"""OCSP over HTTP (RFC 6960 Appendix A) as plain WSGI, in front of Flask.

An OCSP responder answers the same few bytes to many clients, so its per-request cost is the
HTTP server's plus ours, and Flask's routing, request and response objects would be most of it.
``OcspFastPath`` wraps the Flask app's ``wsgi_app``: requests for ``/pki/ocsp`` (POST) and
``/pki/ocsp/<base64>`` (GET) are answered here, everything else goes on to Flask.

Per request: parse with ``cryptography.x509.ocsp`` (``pki.ocsp.parse``), one primary-key
SELECT on ``ca_ocsp_cache`` (``pki.ocsp.CacheReader``: compiled once by SQLAlchemy Core, run on
this thread's own DBAPI connection; read-only, no write lock, the read transaction ended at once
so that the next request sees newer commits), bytes out. A revocation
deletes the cached row in its own transaction, so it is visible to every process on its next
request. Misses, nonces and stale answers are signed by ``pki.ocsp.sign`` in an ORM session,
exactly as before.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from sqlalchemy.exc import SQLAlchemyError

import pki
from db import make_engine, utcnow
from pki import ocsp
from pki.urls import PATH_OCSP

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from idp.runtime import Runtime

log = logging.getLogger("cityid")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

OCSP_RESPONSE = "application/ocsp-response"  # RFC 6960 Appendix A.2
MAX_REQUEST = 64 * 1024  # an OCSPRequest for one certificate is ~100 octets
_GET_PREFIX = PATH_OCSP + "/"


def load_issuing_ca(
    rt: Runtime, holder: dict[str, pki.CertificateAuthority], session: Session | None = None
) -> pki.CertificateAuthority:
    """The issuing CA, loaded once per application and kept in ``holder`` (its key store keeps
    the unlocked key); :class:`pki.PkiError` before ``cityid ca init``.

    ``session``: load through the caller's session (a request that already holds SQLite's write
    lock must not wait for a second session); without one, through a short one of its own."""
    ca = holder.get("ca")
    if ca is None:
        cfg = rt.config
        store = pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase)
        if session is not None:
            ca = pki.load_ca(session, cfg.ca, store, cfg.issuer)
        else:
            with rt.sessions() as own:
                ca = pki.load_ca(own, cfg.ca, store, cfg.issuer)
        holder["ca"] = ca
    return ca


class OcspFastPath:
    """WSGI middleware: answers OCSP requests itself, passes everything else to ``app``."""

    def __init__(self, app: WsgiApp, rt: Runtime, holder: dict[str, pki.CertificateAuthority]) -> None:
        self._app = app
        self._rt = rt
        self._holder = holder
        self._reader = ocsp.CacheReader(rt.engine.dialect)
        # the reader runs on the DBAPI connection: its errors come unwrapped
        self._db_errors: tuple[type[Exception], ...] = (SQLAlchemyError, rt.engine.dialect.loaded_dbapi.Error)
        self._local = threading.local()  # one DBAPI connection per server thread, kept between requests
        # Those connections come from an engine of their own, outside the application's pool: a
        # thread keeps its reader connection as long as it lives, and with more server threads
        # than the pool holds, the pages would wait for connections the readers never return.
        self._reader_engine: Any = None
        self._reader_lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "")
        if method == "POST" and path == PATH_OCSP:
            der = self._body(environ)
            if der is None:
                return _reply(start_response, "413 Content Too Large", b"", "text/plain", 0)
        elif method == "GET" and path.startswith(_GET_PREFIX):
            # RFC 6960 A.1: GET {url}/{url-encoding of base-64 encoding of the DER OCSPRequest};
            # WSGI servers hand over PATH_INFO URL-decoded already; a '%' left is decoded here
            encoded = path[len(_GET_PREFIX) :]
            der = ocsp.decode_get_path(unquote(encoded) if "%" in encoded else encoded)
        else:
            return self._app(environ, start_response)
        try:
            ca = load_issuing_ca(self._rt, self._holder)
        except (pki.PkiError, SQLAlchemyError):
            return self._app(environ, start_response)  # Flask's view says 503
        answer = ocsp.malformed() if der is None else self._answer(ca, der)
        if self._rt.config.insights.metrics:
            from idp.insights.metrics import observe_ocsp

            observe_ocsp(answer.cert_status or answer.response_status)
        return _reply(start_response, "200 OK", answer.der, OCSP_RESPONSE, answer.max_age)

    def _answer(self, ca: pki.CertificateAuthority, der: bytes) -> pki.OcspAnswer:
        question = ocsp.parse(ca, der)
        if isinstance(question, pki.OcspAnswer):
            return question
        now = utcnow()
        try:
            hit = self._cached(ca, question, now)
            if hit is not None:
                return hit
            with self._rt.sessions() as session:
                return ocsp.sign(session, ca, question, now)
        except self._db_errors:
            log.exception("OCSP: database error")
            self._drop_connection()
            # RFC 6960 §2.3: internalError, "the client may try again"
            return ocsp.internal_error()
        except pki.PkiError:
            # e.g. the OCSP signer's key is not in this machine's key store (docs/pki.md: every
            # machine must reach the same one); RFC 6960 §2.3 internalError, never a bare 500
            log.exception("OCSP: cannot sign")
            return ocsp.internal_error()

    def _cached(
        self, ca: pki.CertificateAuthority, question: ocsp.Question, now: dt.datetime
    ) -> pki.OcspAnswer | None:
        dbapi = getattr(self._local, "dbapi", None)
        if dbapi is None:
            with self._reader_lock:
                if self._reader_engine is None:
                    self._reader_engine = make_engine(self._rt.config.db_url, pool=False)
            dbapi = self._local.dbapi = self._reader_engine.raw_connection()
        return self._reader.lookup(dbapi, ca, question, now)

    def _drop_connection(self) -> None:
        dbapi = getattr(self._local, "dbapi", None)
        self._local.dbapi = None
        if dbapi is not None:
            try:
                dbapi.invalidate()
            except self._db_errors:
                log.debug("OCSP: dropping a broken connection failed", exc_info=True)

    @staticmethod
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


def _reply(start_response: StartResponse, status: str, body: bytes, ctype: str, max_age: int) -> list[bytes]:
    # RFC 5019 §6.2: caches may keep a cached answer until we would re-sign it; others not at all
    cache = f"public, max-age={max_age}" if max_age > 0 else "no-store"
    start_response(
        status,
        [
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Cache-Control", cache),
            ("X-Content-Type-Options", "nosniff"),
        ],
    )
    return [body]
