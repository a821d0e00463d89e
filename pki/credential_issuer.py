"""The wallet credential issuer's key and certificate (profile ``credential-issuer``).

Like the city seal (pki/seal.py): the key is made in the CA's key store (encrypted file or HSM),
certified by the issuing CA, and its row in ``ca_authority`` (kind ``credential-issuer``) keeps
the key reference. Credentials carry the certificate chain in ``x5c`` (SD-JWT VC §3.5), so any
verifier that trusts the city root can check them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.orm import Session

from db import utcnow
from pki.ca import CREDENTIAL_ISSUER, CertificateAuthority
from pki.keystore import Signer
from pki.service_key import active_service_key, certify_service_key


@dataclass(frozen=True)
class CredentialIssuerKey:
    serial: str
    key_ref: str
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # issuing CA, root

    def x5c(self) -> list[str]:
        """RFC 7515 §4.1.6: base64 (not url) DER, leaf first; the root is left out (the
        verifier has it as its trust anchor)."""
        import base64

        certs = (self.certificate, self.chain[0])
        return [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in certs]


def init_credential_issuer(
    session: Session,
    ca: CertificateAuthority,
    subject: str,
    *,
    actor: str = "system",
    now: dt.datetime | None = None,
) -> CredentialIssuerKey:
    """A new key in the key store and its ``credential-issuer`` certificate; retires the old row
    (credentials signed before stay verifiable: their certificate is not revoked)."""
    now = now or utcnow()
    name = x509.Name.from_rfc4514_string(subject)
    key = certify_service_key(session, ca, CREDENTIAL_ISSUER, name, actor=actor, now=now)
    issued = key.issued
    return CredentialIssuerKey(
        issued.serial, key.key_ref, issued.certificate, (ca.certificate, ca.root_certificate)
    )


def active_credential_issuer(session: Session, ca: CertificateAuthority) -> CredentialIssuerKey | None:
    row = active_service_key(session, ca, CREDENTIAL_ISSUER)
    if row is None:
        return None
    cert = x509.load_der_x509_certificate(row.der)
    return CredentialIssuerKey(row.serial, row.key_ref, cert, (ca.certificate, ca.root_certificate))


def credential_issuer_signer(ca: CertificateAuthority, key: CredentialIssuerKey) -> Signer:
    return ca.key_store.signer(key.key_ref)
