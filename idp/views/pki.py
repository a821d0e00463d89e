"""The CA over HTTP: chain, CRLs, OCSP, at exactly the URLs the certificates name.

Views call ``pki`` and return bytes; nothing more. OCSP GET and POST are answered by
``idp/ocsp_wsgi.py`` in front of Flask (installed by :func:`init_app`); the OCSP views here
serve only when that middleware is not in place.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.serialization import Encoding
from flask import Blueprint, Flask, Response, abort, current_app, request

import pki
from idp.ocsp_wsgi import OcspFastPath, load_issuing_ca
from idp.runtime import runtime
from idp.tsa_wsgi import TsaFastPath
from pki import crl
from pki.ocsp import malformed
from pki.urls import (
    PATH_CHAIN,
    PATH_FULL_CRL,
    PATH_ISSUING,
    PATH_OCSP,
    PATH_ROOT,
    PATH_ROOT_CRL,
)

bp = Blueprint("pki", __name__)

_DER = Encoding.DER
_DER_CERT = "application/pkix-cert"  # RFC 2585 §4.1
_DER_CRL = "application/pkix-crl"  # RFC 2585 §4.2
_OCSP_RESPONSE = "application/ocsp-response"  # RFC 6960 Appendix A.2


def init_app(app: Flask, _server: object) -> None:
    """OCSP requests are answered in plain WSGI before Flask sees them (``idp/ocsp_wsgi.py``)."""
    app.wsgi_app = OcspFastPath(app.wsgi_app, app.extensions["cityid"], pki_holder(app))  # type: ignore[method-assign]
    # RFC 3161 §3.4: POST /pki/tsa, answered in plain WSGI too (idp/tsa_wsgi.py)
    app.wsgi_app = TsaFastPath(app.wsgi_app, app.extensions["cityid"], pki_holder(app))  # type: ignore[method-assign]


def pki_holder(app: Flask) -> dict[str, pki.CertificateAuthority]:
    holder: dict[str, pki.CertificateAuthority] = app.extensions.setdefault("cityid.pki", {})
    return holder


def _ca() -> pki.CertificateAuthority:
    """The issuing CA, loaded once per application (its key store keeps the unlocked key)."""
    try:
        return load_issuing_ca(runtime(), pki_holder(current_app))
    except pki.PkiError:
        abort(503)


def _bytes(body: bytes, mimetype: str, max_age: int = 300) -> Response:
    response = Response(body, mimetype=mimetype)
    response.cache_control.public = True
    response.cache_control.max_age = max_age
    return response


@bp.get(PATH_CHAIN)
def chain() -> Response:
    return _bytes(_ca().chain_pem(), "application/pem-certificate-chain")  # RFC 8555 §9.1


@bp.get(PATH_ISSUING)
def issuing_certificate() -> Response:
    return _bytes(_ca().certificate.public_bytes(_DER), _DER_CERT, 86400)


@bp.get(PATH_ROOT)
def root_certificate() -> Response:
    return _bytes(_ca().root_certificate.public_bytes(_DER), _DER_CERT, 86400)


@bp.get(PATH_FULL_CRL)
def full_crl() -> Response:
    return _crl(crl.FULL)


@bp.get(PATH_ROOT_CRL)
def root_crl() -> Response:
    return _crl(crl.ROOT)


@bp.get("/pki/crl/<int:shard>.crl")
def shard_crl(shard: int) -> Response:
    return _crl(str(shard))


def _crl(scope: str) -> Response:
    ca = _ca()
    try:
        crl.check_scope(ca, scope)
    except pki.PkiError:
        abort(404)
    with runtime().sessions() as session:
        return _bytes(crl.current(session, ca, scope), _DER_CRL, 300)


@bp.post(PATH_OCSP)
def ocsp_post() -> Response:
    return _ocsp(request.get_data(cache=False))


@bp.get(PATH_OCSP + "/<path:encoded>")
def ocsp_get(encoded: str) -> Response:
    der = pki.decode_get_path(encoded)
    if der is None:
        return _ocsp_answer(malformed())
    return _ocsp(der)


def _ocsp(der: bytes) -> Response:
    ca = _ca()
    with runtime().sessions() as session:
        return _ocsp_answer(pki.respond(session, ca, der))


def _ocsp_answer(answer: pki.OcspAnswer) -> Response:
    response = Response(answer.der, mimetype=_OCSP_RESPONSE)
    if answer.max_age > 0:  # RFC 5019 §6.2: let caches keep it until we would re-sign
        response.cache_control.public = True
        response.cache_control.max_age = answer.max_age
    else:
        response.cache_control.no_store = True
    return response
