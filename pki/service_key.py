"""The CA's own service keys: the OCSP signer, the TSA, the city seal, the credential issuer.

Each is one key made in the CA's key store (encrypted file, or the HSM over PKCS#11 — then it
exists only there), certified by the issuing CA for its profile, and remembered by its row in
``ca_authority`` (its kind), which replaces the kind's active row: certificates issued before
are not revoked, so what was signed with them stays valid.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db import audit, new_id
from pki.ca import CREDENTIAL_ISSUER, OCSP_SIGNER, SEAL, TSA, CertificateAuthority
from pki.issuance import IssueRequest, IssueResult, issue_batch
from pki.models import CaAuthority
from pki.serials import serial_hex


@dataclass(frozen=True)
class ServiceKeyKind:
    """How one kind of service key is certified and filed."""

    profile: str  # the issuing CA certifies it for this profile (pki/profiles.py)
    key_label: str  # the key store's label is ``<key_label>-<16 hex digits>``
    audit_action: str


SERVICE_KEYS: dict[str, ServiceKeyKind] = {  # by ``ca_authority.kind``
    # RFC 6960 §4.2.2.2: the delegated OCSP signer
    OCSP_SIGNER: ServiceKeyKind("ocsp-signer", "ocsp", "pki.ocsp_signer.rotate"),
    # RFC 3161: the time-stamp authority
    TSA: ServiceKeyKind("timestamping", "tsa", "pki.tsa.rotate"),
    SEAL: ServiceKeyKind("document-seal", "seal", "pki.seal.init"),
    CREDENTIAL_ISSUER: ServiceKeyKind("credential-issuer", "vci", "pki.credential_issuer.init"),
}


@dataclass(frozen=True)
class ServiceKey:
    key_ref: str
    issued: IssueResult


def active_service_key(session: Session, ca: CertificateAuthority, kind: str) -> CaAuthority | None:
    """The newest active row of ``kind`` under the issuing CA, or None."""
    return session.execute(
        select(CaAuthority)
        .where(CaAuthority.kind == kind, CaAuthority.parent_id == ca.id, CaAuthority.active.is_(True))
        .order_by(CaAuthority.created_at.desc())
        .limit(1)
    ).scalar()


def store_authority(
    session: Session,
    *,
    kind: str,
    parent_id: str | None,
    key_ref: str,
    cert: x509.Certificate,
    now: dt.datetime,
) -> CaAuthority:
    """The ``ca_authority`` row of a CA certificate or of one of the CA's service keys."""
    row = CaAuthority(
        id=new_id(),
        kind=kind,
        parent_id=parent_id,
        key_ref=key_ref,
        serial=serial_hex(cert.serial_number),
        subject=cert.subject.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        active=True,
        der=cert.public_bytes(serialization.Encoding.DER),
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def signer_subject(ca: CertificateAuthority, suffix: str) -> x509.Name:
    """``<issuing CA's CN> <suffix>``, with the CA's O and C: for the OCSP signer and the TSA."""
    cn = ca.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    attrs: list[x509.NameAttribute[str | bytes]] = [
        x509.NameAttribute(NameOID.COMMON_NAME, f"{cn!s} {suffix}"[:64])
    ]
    for oid in (NameOID.ORGANIZATION_NAME, NameOID.COUNTRY_NAME):
        attrs.extend(ca.certificate.subject.get_attributes_for_oid(oid))
    return x509.Name(attrs)


def certify_service_key(
    session: Session,
    ca: CertificateAuthority,
    kind: str,
    subject: x509.Name,
    *,
    actor: str,
    now: dt.datetime,
    validity: dt.timedelta | None = None,
) -> ServiceKey:
    """A new key of ``kind`` (one of :data:`SERVICE_KEYS`) in the CA's key store, certified by
    the issuing CA for its profile (the CA issues it to itself: internal-only profiles allowed);
    its row becomes the kind's active one and the audit log records it. The certificate is
    committed (``issue_batch``); the row and the audit record are left to the caller's commit."""
    spec = SERVICE_KEYS[kind]
    key_ref = ca.key_store.generate(f"{spec.key_label}-{secrets.token_hex(8)}")
    key = ca.key_store.signer(key_ref)
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    request = IssueRequest(
        csr=csr.public_bytes(serialization.Encoding.DER),
        profile=spec.profile,
        validity=validity,
        requested_by=actor,
    )
    issued = issue_batch(session, ca, [request], now=now, _internal=True)[0]
    session.execute(
        update(CaAuthority)
        .where(CaAuthority.kind == kind, CaAuthority.parent_id == ca.id)
        .values(active=False)
    )
    store_authority(session, kind=kind, parent_id=ca.id, key_ref=key_ref, cert=issued.certificate, now=now)
    audit.record(
        session,
        action=spec.audit_action,
        outcome="success",
        actor=actor,
        subject=issued.subject,
        details={"serial": issued.serial, "not_after": issued.not_after, "key_ref": key_ref},
    )
    return ServiceKey(key_ref, issued)
