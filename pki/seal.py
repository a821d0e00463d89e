"""The city seal's key and certificate (profile ``document-seal``).

The key is made in the CA's key store (``ca.key_store``: encrypted file, or the HSM over PKCS#11
— then it exists only there) and certified by the issuing CA; its row in ``ca_authority``
(kind ``document-seal``) remembers the key reference, as for the OCSP signer and the TSA.
``cityid seal init`` calls :func:`init_seal`; a second call makes a new key and certificate and
retires the old row (documents sealed before stay valid: their certificate is not revoked).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy.orm import Session

from db import utcnow
from pki.ca import SEAL, CertificateAuthority
from pki.errors import BadRequest
from pki.keystore import Signer
from pki.service_key import active_service_key, certify_service_key


@dataclass(frozen=True)
class Seal:
    serial: str
    key_ref: str
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # issuing CA, root
    not_after: dt.datetime


def init_seal(
    session: Session,
    ca: CertificateAuthority,
    subject: str,
    *,
    validity: dt.timedelta | None = None,
    actor: str = "system",
    now: dt.datetime | None = None,
) -> Seal:
    """A new seal key in the key store and its ``document-seal`` certificate. Commits."""
    now = now or utcnow()
    try:
        name = x509.Name.from_rfc4514_string(subject)
    except ValueError as exc:
        raise BadRequest(f"not an RFC 4514 name: {subject!r}") from exc
    key = certify_service_key(session, ca, SEAL, name, actor=actor, now=now, validity=validity)
    issued = key.issued
    session.commit()
    chain = (ca.certificate, ca.root_certificate)
    return Seal(issued.serial, key.key_ref, issued.certificate, chain, issued.not_after)


def active_seal(session: Session, ca: CertificateAuthority) -> Seal | None:
    row = active_service_key(session, ca, SEAL)
    if row is None:
        return None
    cert = x509.load_der_x509_certificate(row.der)
    return Seal(row.serial, row.key_ref, cert, (ca.certificate, ca.root_certificate), row.not_after)


def seal_signer(ca: CertificateAuthority, seal: Seal) -> Signer:
    """The seal key's signer: the key stays in its store (an HSM signs inside the token)."""
    return ca.key_store.signer(seal.key_ref)
