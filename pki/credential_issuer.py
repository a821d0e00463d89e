"""The wallet credential issuer's key and certificate (profile ``credential-issuer``).

Like the city seal (pki/seal.py): the key is made in the CA's key store (encrypted file or HSM),
certified by the issuing CA, and its row in ``ca_authority`` (kind ``credential-issuer``) keeps
the key reference. Credentials carry the certificate chain in ``x5c`` (SD-JWT VC §3.5), so any
verifier that trusts the city root can check them.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db import audit, utcnow
from pki.ca import CREDENTIAL_ISSUER, CertificateAuthority
from pki.issuance import IssueRequest, issue_batch
from pki.keystore import Signer
from pki.models import CaAuthority


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
    key_ref = ca.key_store.generate(f"vci-{secrets.token_hex(8)}")
    key = ca.key_store.signer(key_ref)
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    issued = issue_batch(
        session,
        ca,
        [
            IssueRequest(
                csr=csr.public_bytes(serialization.Encoding.DER),
                profile="credential-issuer",
                requested_by=actor,
            )
        ],
        now=now,
        _internal=True,
    )[0]
    from pki.setup import store_authority

    session.execute(
        update(CaAuthority)
        .where(CaAuthority.kind == CREDENTIAL_ISSUER, CaAuthority.parent_id == ca.id)
        .values(active=False)
    )
    store_authority(
        session, kind=CREDENTIAL_ISSUER, parent_id=ca.id, key_ref=key_ref, cert=issued.certificate, now=now
    )
    audit.record(
        session,
        action="pki.credential_issuer.init",
        outcome="success",
        actor=actor,
        subject=issued.subject,
        details={"serial": issued.serial, "not_after": issued.not_after, "key_ref": key_ref},
    )
    return CredentialIssuerKey(
        issued.serial, key_ref, issued.certificate, (ca.certificate, ca.root_certificate)
    )


def active_credential_issuer(session: Session, ca: CertificateAuthority) -> CredentialIssuerKey | None:
    row = session.execute(
        select(CaAuthority)
        .where(
            CaAuthority.kind == CREDENTIAL_ISSUER,
            CaAuthority.parent_id == ca.id,
            CaAuthority.active.is_(True),
        )
        .order_by(CaAuthority.created_at.desc())
        .limit(1)
    ).scalar()
    if row is None:
        return None
    cert = x509.load_der_x509_certificate(row.der)
    return CredentialIssuerKey(row.serial, row.key_ref, cert, (ca.certificate, ca.root_certificate))


def credential_issuer_signer(ca: CertificateAuthority, key: CredentialIssuerKey) -> Signer:
    return ca.key_store.signer(key.key_ref)
