"""What finishing a PAdES signature needs from this instance: our TSA and our revocation data.

``timestamper``: a pyHanko ``TimeStamper`` that asks cityid's TSA in process (RFC 3161; no HTTP
round trip to ourselves). ``validation_context``: the city root as trust anchor and, for every
certificate of the signature and of its time-stamp, an OCSP response (RFC 6960) signed now by
our responder, plus the root's CRL for the issuing CA: what B-LT embeds in the DSS (ETSI EN
319 142-1 §5.4), so the file validates offline. All of it in the caller's transaction.
"""

from __future__ import annotations

import secrets
from typing import Any

from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko_certvalidator import ValidationContext
from sqlalchemy.orm import Session

import pki
from pki import ocsp as pki_ocsp


class Unavailable(Exception):
    """No TSA certificate (run ``cityid init``) or no revocation data to embed."""


class _InProcessTimeStamper(TimeStamper):
    """pyHanko's TimeStamper over ``pki.tsa`` (same checks of the answer as over HTTP)."""

    def __init__(self, tsa: Any) -> None:
        super().__init__()
        self._tsa = tsa

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        return tsp.TimeStampResp.load(self._tsa.respond(req.dump()).der)


def _tsa(db: Session, ca: pki.CertificateAuthority) -> Any:
    try:
        from pki import tsa  # type: ignore[attr-defined, unused-ignore]
    except ImportError as exc:  # pragma: no cover - the TSA comes with signing-core
        raise Unavailable("this instance has no time-stamp authority") from exc
    try:
        return tsa.load_time_stamper(db, ca)
    except pki.PkiError as exc:
        raise Unavailable(str(exc)) from exc


def timestamper(db: Session, ca: pki.CertificateAuthority) -> TimeStamper:
    return _InProcessTimeStamper(_tsa(db, ca))


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def ocsp_response(db: Session, ca: pki.CertificateAuthority, cert: x509.Certificate) -> bytes:
    """Our responder's answer for ``cert``, asked in process. With a nonce (RFC 8954): a fresh
    answer that is not written to the OCSP cache, so the caller's transaction stays its own."""
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, ca.certificate, hashes.SHA256())
        .add_extension(x509.OCSPNonce(secrets.token_bytes(16)), critical=False)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    answer = pki_ocsp.respond(db, ca, request)
    if answer.response_status != "successful" or answer.cert_status != "good":
        raise Unavailable(
            f"OCSP for serial {cert.serial_number:x}: {answer.response_status}/{answer.cert_status}"
        )
    return answer.der


def validation_context(
    db: Session,
    ca: pki.CertificateAuthority,
    certificates: list[x509.Certificate],
    stamper: TimeStamper | None,
) -> ValidationContext:
    """Trust in the city root, revocation data for ``certificates`` and the TSA's certificate."""
    from pki.crl import ROOT, current

    leaves = list(certificates)
    tsa_chain: list[x509.Certificate] = []
    if isinstance(stamper, _InProcessTimeStamper):
        leaves.append(stamper._tsa.tsa.certificate)
        tsa_chain = list(stamper._tsa.chain)
    ocsps = [asn1_ocsp.OCSPResponse.load(ocsp_response(db, ca, c)) for c in leaves]
    try:
        root_crl = current(db, ca, ROOT)  # RFC 5280 §5: the root's CRL covers the issuing CA
    except pki.PkiError as exc:
        raise Unavailable(str(exc)) from exc
    return ValidationContext(
        trust_roots=[_asn1(ca.root_certificate)],
        other_certs=[_asn1(c) for c in (ca.certificate, *tsa_chain, *leaves)],
        ocsps=ocsps,
        crls=[asn1_crl.CertificateList.load(root_crl)],
        allow_fetching=False,
        revocation_mode="hard-fail",
    )
