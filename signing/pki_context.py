"""The city's own services for ``finish``: our TSA in process, revocation data from our CA.

Time-stamps come from ``pki.tsa.TimeStamper`` directly (no HTTP round trip); OCSP responses
are asked of ``pki.respond`` exactly as a client over HTTP would ask, and CRLs are the CA's
current ones, so that what a B-LT signature embeds is what any relying party could fetch.
"""

from __future__ import annotations

from collections.abc import Sequence

from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from pyhanko.sign.timestamps.api import TimeStamper as PyHankoTimeStamper
from sqlalchemy.orm import Session

import pki
from pki import crl
from pki.tsa import TimeStamper, load_time_stamper
from signing.errors import RevocationDataMissing, TimeStampFailed
from signing.pades import RevocationData, RevocationSource, SigningContext

DER = serialization.Encoding.DER


class InProcessTimeStamper(PyHankoTimeStamper):
    """pyHanko's time-stamper interface over our TSA, in this process (RFC 3161 semantics kept:
    a request with a nonce, checked by pyHanko against the reply)."""

    def __init__(self, stamper: TimeStamper) -> None:
        super().__init__(include_nonce=True)  # type: ignore[no-untyped-call]
        self._stamper = stamper

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        answer = self._stamper.respond(req.dump())
        if not answer.granted:
            raise TimeStampFailed(answer.reason)
        return tsp.TimeStampResp.load(answer.der)


class PkiRevocation(RevocationSource):
    """OCSP responses (RFC 6960) for end-entity certificates of ``ca``, the root's CRL for the
    issuing CA certificate, the shard CRL of each end-entity certificate (RFC 5280 §5)."""

    def __init__(self, session: Session, ca: pki.CertificateAuthority) -> None:
        self._session = session
        self._ca = ca

    def collect(self, chain: Sequence[x509.Certificate]) -> RevocationData:
        ca = self._ca
        certs: dict[bytes, None] = {}
        ocsps: list[bytes] = []
        crls: dict[bytes, None] = {}
        for cert in [*chain, ca.certificate, ca.root_certificate]:
            der = cert.public_bytes(DER)
            if der in certs:
                continue
            certs[der] = None
            if cert.issuer != ca.certificate.subject or cert.subject == ca.certificate.subject:
                continue  # the CAs: the root's ARL below covers the issuing CA
            request = ocsp.OCSPRequestBuilder().add_certificate(cert, ca.certificate, hashes.SHA256()).build()
            answer = pki.respond(self._session, ca, request.public_bytes(DER))
            parsed = ocsp.load_der_ocsp_response(answer.der)
            if parsed.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
                raise RevocationDataMissing(f"OCSP for {cert.serial_number:x}: {parsed.response_status.name}")
            ocsps.append(answer.der)
            shard = pki.status_of_certificate(self._session, der).shard
            crls[crl.current(self._session, ca, str(shard))] = None
        crls[crl.current(self._session, ca, crl.ROOT)] = None
        return RevocationData(tuple(certs), tuple(ocsps), tuple(crls))


def pki_context(session: Session, ca: pki.CertificateAuthority) -> SigningContext:
    """Our TSA and our CA's revocation data, for ``signing.finish`` and ``signing.seal``."""
    return SigningContext(InProcessTimeStamper(load_time_stamper(session, ca)), PkiRevocation(session, ca))
