"""Revocation (RFC 5280 §5.3.1 reason codes), reinstatement from hold, and status look-ups."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db import audit, utcnow
from pki import crl
from pki.ca import CertificateAuthority
from pki.errors import BadRequest, BadRevocationReason, NotOnHold, UnknownCertificate
from pki.models import ISSUED, PENDING, REVOKED, CaCertificate, CaOcspCache
from pki.serials import parse_serial

# RFC 5280 §5.3.1 CRLReason; removeFromCRL (8) belongs to delta CRLs only and is refused.
REASON_CODES: dict[str, int] = {
    "unspecified": 0,
    "keyCompromise": 1,
    "cACompromise": 2,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
    "certificateHold": 6,
    "privilegeWithdrawn": 9,
    "aACompromise": 10,
}
REASON_NAMES = {code: name for name, code in REASON_CODES.items()}
HOLD = REASON_CODES["certificateHold"]


def reason_code(name: str) -> int:
    """Accept the RFC 5280 name (``keyCompromise``) or snake case (``key_compromise``)."""
    wanted = name.replace("_", "").replace("-", "").lower()
    for known, code in REASON_CODES.items():
        if known.lower() == wanted:
            return code
    raise BadRevocationReason(f"unknown reason {name!r}; one of {', '.join(REASON_CODES)}")


@dataclass(frozen=True)
class CertificateStatus:
    serial: str
    profile: str
    subject: str
    status: str  # pending | issued | revoked
    not_before: dt.datetime
    not_after: dt.datetime
    revoked_at: dt.datetime | None
    revocation_reason: str | None
    shard: int
    fingerprint_sha256: str | None
    certificate_der: bytes | None

    def is_good(self, now: dt.datetime | None = None) -> bool:
        """Issued, not revoked, and within its validity period (RFC 5280 §6.1.3 (a)(2))."""
        now = now or utcnow()
        return self.status == ISSUED and self.not_before <= now <= self.not_after

    @classmethod
    def of(cls, row: CaCertificate) -> CertificateStatus:
        return cls(
            serial=row.serial,
            profile=row.profile,
            subject=row.subject,
            status=row.status,
            not_before=row.not_before,
            not_after=row.not_after,
            revoked_at=row.revoked_at,
            revocation_reason=None
            if row.revocation_reason is None
            else REASON_NAMES.get(row.revocation_reason, str(row.revocation_reason)),
            shard=row.shard,
            fingerprint_sha256=row.fingerprint_sha256,
            certificate_der=row.der,
        )


def status(session: Session, serial: str) -> CertificateStatus:
    row = session.get(CaCertificate, parse_serial(serial))
    if row is None:
        raise UnknownCertificate(f"no certificate {serial[:60]!r}")
    return CertificateStatus.of(row)


def status_by_fingerprint(session: Session, fingerprint_sha256: str) -> CertificateStatus:
    fp = fingerprint_sha256.lower().replace(":", "")
    row = session.execute(select(CaCertificate).where(CaCertificate.fingerprint_sha256 == fp)).scalar()
    if row is None:
        raise UnknownCertificate("no certificate with this fingerprint")
    return CertificateStatus.of(row)


def status_of_certificate(session: Session, certificate_der: bytes) -> CertificateStatus:
    """Status of a certificate presented to us (e.g. by a device): found by its SHA-256."""
    try:
        cert = x509.load_der_x509_certificate(certificate_der)
    except ValueError as exc:
        raise UnknownCertificate("not a DER certificate") from exc
    der = cert.public_bytes(Encoding.DER)
    return status_by_fingerprint(session, hashlib.sha256(der).hexdigest())


def list_certificates(
    session: Session, *, status: str | None = None, profile: str | None = None, limit: int = 1000
) -> list[CertificateStatus]:
    query = select(CaCertificate).order_by(CaCertificate.created_at.desc()).limit(limit)
    if status is not None:
        if status not in (PENDING, ISSUED, REVOKED):
            raise BadRequest(f"no status {status!r}")
        query = query.where(CaCertificate.status == status)
    if profile is not None:
        query = query.where(CaCertificate.profile == profile)
    return [CertificateStatus.of(row) for row in session.execute(query).scalars()]


def _locked(session: Session, ca: CertificateAuthority, serial: str) -> CaCertificate | None:
    return session.execute(
        select(CaCertificate)
        .where(CaCertificate.serial == serial, CaCertificate.issuer_id == ca.id)
        .with_for_update()
    ).scalar()


def _publish(session: Session, ca: CertificateAuthority, row: CaCertificate, now: dt.datetime) -> None:
    """Make a status change visible at once: drop cached OCSP answers, re-sign the shard."""
    session.execute(
        delete(CaOcspCache).where(CaOcspCache.issuer_id == ca.id, CaOcspCache.serial == row.serial)
    )
    crl.mark_stale(session, ca, crl.FULL)
    if row.shard < ca.crl_shards:
        crl.generate(session, ca, str(row.shard), now=now)


def revoke(
    session: Session,
    ca: CertificateAuthority,
    serial: str,
    reason: str = "unspecified",
    *,
    actor: str = "system",
    now: dt.datetime | None = None,
    commit: bool = True,
) -> CertificateStatus:
    """Revoke a certificate; idempotent. Commits: OCSP and the shard CRL reflect it at once.

    ``commit=False``: part of the caller's transaction (an account's erasure, which must happen
    whole or not at all); the caller commits, and a refusal is raised without a rollback or an
    audit entry of its own, for the caller's rollback to undo everything."""
    now = (now or utcnow()).replace(microsecond=0)
    try:
        code = reason_code(reason)
        canonical = parse_serial(serial)
        row = _locked(session, ca, canonical)
        if row is None:
            raise UnknownCertificate(f"no certificate {serial[:60]!r}")
    except (BadRevocationReason, UnknownCertificate) as exc:
        if not commit:
            raise
        session.rollback()
        audit.record(
            session,
            action="pki.certificate.revoke",
            outcome="denied",
            actor=actor,
            subject=serial[:60],
            reason=exc.code,
            details={"requested_reason": reason[:40]},
        )
        session.commit()
        raise
    if row.status == REVOKED and not (row.revocation_reason == HOLD and code != HOLD):
        # RFC 5280 §5.3.1: only a hold may turn into a final revocation; anything else is a no-op
        audit.record(
            session,
            action="pki.certificate.revoke",
            outcome="info",
            actor=actor,
            subject=row.subject,
            reason="already revoked",
            details={"serial": row.serial, "reason": REASON_NAMES.get(row.revocation_reason or 0)},
        )
        if commit:
            session.commit()
        return CertificateStatus.of(row)
    row.status = REVOKED
    row.revoked_at = now if row.revoked_at is None else row.revoked_at
    row.revocation_reason = code
    session.flush()
    _publish(session, ca, row, now)
    audit.record(
        session,
        action="pki.certificate.revoke",
        outcome="success",
        actor=actor,
        subject=row.subject,
        reason=REASON_NAMES[code],
        details={"serial": row.serial, "profile": row.profile, "shard": row.shard},
    )
    if commit:
        session.commit()
    return CertificateStatus.of(row)


def reinstate(
    session: Session,
    ca: CertificateAuthority,
    serial: str,
    *,
    actor: str = "system",
    now: dt.datetime | None = None,
) -> CertificateStatus:
    """Release a certificate from hold (RFC 5280 §5.3.1 certificateHold); nothing else returns."""
    now = (now or utcnow()).replace(microsecond=0)
    row = _locked(session, ca, parse_serial(serial))
    if row is None or row.status != REVOKED or row.revocation_reason != HOLD:
        error: UnknownCertificate | NotOnHold = (
            UnknownCertificate(f"no certificate {serial[:60]!r}") if row is None else NotOnHold()
        )
        session.rollback()
        audit.record(
            session,
            action="pki.certificate.reinstate",
            outcome="denied",
            actor=actor,
            subject=serial[:60],
            reason=error.code,
        )
        session.commit()
        raise error
    row.status = ISSUED if row.der is not None else PENDING
    row.revoked_at = None
    row.revocation_reason = None
    session.flush()
    _publish(session, ca, row, now)
    audit.record(
        session,
        action="pki.certificate.reinstate",
        outcome="success",
        actor=actor,
        subject=row.subject,
        details={"serial": row.serial},
    )
    session.commit()
    return CertificateStatus.of(row)


def revoke_abandoned(
    session: Session,
    ca: CertificateAuthority,
    *,
    older_than: dt.timedelta = dt.timedelta(minutes=10),
    actor: str = "system",
    now: dt.datetime | None = None,
) -> list[str]:
    """Revoke ``pending`` certificates whose issuing process died between recording and storing.

    Their signature may exist (in the dead process's memory only); revoking makes sure that no
    copy of it can ever be relied upon.
    """
    now = now or utcnow()
    serials = list(
        session.execute(
            select(CaCertificate.serial).where(
                CaCertificate.issuer_id == ca.id,
                CaCertificate.status == PENDING,
                CaCertificate.created_at < now - older_than,
            )
        ).scalars()
    )
    session.rollback()
    for serial in serials:
        revoke(session, ca, serial, "cessationOfOperation", actor=actor, now=now)
    return serials
