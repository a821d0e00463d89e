"""The discovery document and the JWKS as static documents, served before Flask.

Both are read by every relying party and proxy, often, and neither depends on the request: the
discovery document is fixed by the configuration (computed once per process), the JWKS by the key
set (recomputed whenever ``idp.keys.KeyCache`` loads a different set: at most ``ttl`` seconds
after a rotation, in every worker, since each worker's cache reloads from the database). Each is
held as its bytes, a strong ETag (a digest of the bytes: every worker that holds the same
document names it alike) and the complete header list, so that a request costs a dictionary
lookup: ``If-None-Match`` gets a 304 (RFC 9110 §13.1.2, §15.4.5), ``Cache-Control`` lets proxies
and relying parties keep it (RFC 9111 §5.2.2).

Like ``idp.oauth.token_endpoint``, this is WSGI middleware: GET and HEAD of the two paths are
answered here; anything else (another method, a CORS preflight, a JWKS whose cache is stale and
must be loaded from the database) goes to Flask, whose views answer with the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response

from idp import cors
from idp.keys import KeyMaterial

DISCOVERY_PATH = "/.well-known/openid-configuration"
AS_METADATA_PATH = "/.well-known/oauth-authorization-server"  # RFC 8414 §3: the same document
JWKS_PATH = "/jwks.json"
DISCOVERY_CACHE = "public, max-age=300"
JWKS_CACHE = "public, max-age=60"  # a rotated key is published ahead for much longer (idp.keys)


@dataclass(frozen=True)
class Document:
    body: bytes
    etag: str
    cache_control: str


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'  # RFC 9110 §8.8.3: strong


def discovery_document(config: Any) -> Document:
    from idp.views.oidc import discovery_metadata

    body = json.dumps(discovery_metadata(config), sort_keys=True, separators=(",", ":")).encode()
    return Document(body, _etag(body), DISCOVERY_CACHE)


def jwks_document(material: KeyMaterial) -> Document:
    return Document(material.jwks_body, material.jwks_etag, JWKS_CACHE)


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: If-None-Match is false when a listed tag matches (weak comparison, §8.8.3.2)
    or the field is "*"."""
    if not if_none_match:
        return False
    value = if_none_match.strip()
    if value == "*":
        return True
    if len(value) > 4096:  # not a list of our 34-byte tags
        return False
    for tag in value.split(","):
        tag = tag.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def flask_response(doc: Document, if_none_match: str | None) -> Response:
    """The same answer from a Flask view (when the middleware hands a request on)."""
    if not_modified(if_none_match, doc.etag):
        resp = Response(status=304)
    else:
        resp = Response(doc.body, mimetype="application/json")
    resp.headers["ETag"] = doc.etag
    resp.headers["Cache-Control"] = doc.cache_control
    return resp


# ETag, body, the headers of a 200, those of a 304
Prepared = tuple[str, bytes, list[tuple[str, str]], list[tuple[str, str]]]


class StaticDocuments:
    """WSGI middleware: GET/HEAD of the discovery document and the JWKS from precomputed bytes."""

    def __init__(self, app: Flask, finish: Callable[[Response], Response]) -> None:
        self.wrapped = app.wsgi_app
        self.finish = finish  # the headers every response gets (idp.app)
        rt = app.extensions["cityid"]
        self.key_cache = rt.key_cache
        self.discovery = self._prepared(discovery_document(rt.config))
        self.jwks: Prepared | None = None

    def _prepared(self, doc: Document) -> Prepared:
        """The body, the headers of a 200 and those of a 304 (RFC 9110 §15.4.5: the same fields a
        200 would have, without the content's own)."""
        resp = self.finish(flask_response(doc, None))
        resp.headers.extend(cors.SIMPLE)
        resp.headers["Content-Length"] = str(len(doc.body))
        full = resp.headers.to_wsgi_list()
        short = [(k, v) for k, v in full if k.lower() not in ("content-type", "content-length")]
        return doc.etag, doc.body, full, short

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD") or path not in (DISCOVERY_PATH, AS_METADATA_PATH, JWKS_PATH):
            return self.wrapped(environ, start_response)
        if path != JWKS_PATH:
            prepared = self.discovery
        else:
            material = self.key_cache.fresh()
            if material is None:  # stale: Flask's view loads the key set from the database
                return self.wrapped(environ, start_response)
            cached = self.jwks
            if cached is None or cached[0] != material.jwks_etag:  # the key set changed
                cached = self.jwks = self._prepared(jwks_document(material))
            prepared = cached
        etag, body, full, short = prepared
        if not_modified(environ.get("HTTP_IF_NONE_MATCH"), etag):
            start_response("304 Not Modified", short)
            return []
        start_response("200 OK", full)
        return [] if method == "HEAD" else [body]
