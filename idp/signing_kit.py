"""``signing.finish`` inside a web request: our TSA in process and revocation data that is
made without committing or rolling back the request's transaction.

``signing.pki_context`` asks ``pki.respond`` for cacheable OCSP answers and refreshes shard
CRLs; both commit (the OCSP cache write, a CRL refresh) or roll back the session they are given.
In the device's approval that session holds the proof's ``jti`` and the request row, which must
stay one unit of work (a refused or failed answer changes nothing). So here each OCSP request
carries a nonce (RFC 8954: a fresh answer, echoed, never cached, nothing written), and the CRL
embedded is the root's (stored, never regenerated in a request) for the issuing CA; the
end-entity certificates are covered by their OCSP answers (ETSI EN 319 142-1 §5.4.2: either).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from sqlalchemy.orm import Session

import pki
from pki import crl
from pki.tsa import load_time_stamper
from signing.errors import RevocationDataMissing
from signing.pades import RevocationData, RevocationSource, SigningContext
from signing.pki_context import InProcessTimeStamper

DER = serialization.Encoding.DER


class InTransactionRevocation(RevocationSource):
    def __init__(self, session: Session, ca: pki.CertificateAuthority) -> None:
        self._session = session
        self._ca = ca

    def collect(self, chain: Sequence[x509.Certificate]) -> RevocationData:
        ca = self._ca
        certs: dict[bytes, None] = {}
        ocsps: list[bytes] = []
        for cert in [*chain, ca.certificate, ca.root_certificate]:
            der = cert.public_bytes(DER)
            if der in certs:
                continue
            certs[der] = None
            if cert.issuer != ca.certificate.subject or cert.subject == ca.certificate.subject:
                continue  # the CAs: the root's CRL below covers the issuing CA
            request = (
                ocsp.OCSPRequestBuilder()
                .add_certificate(cert, ca.certificate, hashes.SHA256())
                .add_extension(x509.OCSPNonce(secrets.token_bytes(16)), critical=False)
                .build()
            )
            answer = pki.respond(self._session, ca, request.public_bytes(DER))
            # RFC 6960 §2.2: only a "good" answer lets the signature be finished
            if answer.response_status != "successful" or answer.cert_status != "good":
                raise RevocationDataMissing(
                    f"OCSP for {cert.serial_number:x}: {answer.response_status}/{answer.cert_status}"
                )
            ocsps.append(answer.der)
        try:
            root_crl = crl.current(self._session, ca, crl.ROOT)  # stored; no refresh, no commit
        except pki.PkiError as exc:
            raise RevocationDataMissing(str(exc)) from exc
        return RevocationData(tuple(certs), tuple(ocsps), (root_crl,))


def context(session: Session, ca: pki.CertificateAuthority) -> SigningContext:
    """Our TSA (``signing.pki_context.InProcessTimeStamper``) and :class:`InTransactionRevocation`."""
    return SigningContext(
        InProcessTimeStamper(load_time_stamper(session, ca)), InTransactionRevocation(session, ca)
    )
