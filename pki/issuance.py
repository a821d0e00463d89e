"""Issuance from a CSR, one at a time or in batches.

Crash safety (see README): every certificate is recorded as ``pending`` (serial, key hash,
subject, validity, shard) and committed *before* it is signed; its DER is stored and the row
marked ``issued`` in a second commit before it is returned. A process that dies in between
leaves a ``pending`` row, which OCSP answers as revoked (RFC 6960 §2.2, "not issued") and
:func:`pki.revocation.revoke_abandoned` revokes for good.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import bindparam, insert, update
from sqlalchemy.orm import Session

from db import audit, driver, utcnow
from pki.ca import CertificateAuthority
from pki.cert_der import Assembler
from pki.errors import (
    BadCsrSignature,
    MalformedCsr,
    PkiError,
    UnknownProfile,
    ValidityNotAllowed,
    WeakCsrSignatureAlgorithm,
)
from pki.models import CERTIFICATES, ISSUED, PENDING
from pki.profiles import PROFILES, Csr, Draft, Profile
from pki.serials import new_serial, serial_hex

BACKDATE = dt.timedelta(minutes=1)  # tolerate relying parties whose clocks run a little slow
_ALLOWED_CSR_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
_TABLE = CERTIFICATES


@dataclass(frozen=True)
class IssueRequest:
    csr: bytes  # PKCS#10, PEM or DER
    profile: str
    device_id: str | None = None  # device-auth: the certificate names urn:cityid:device:<id>
    validity: dt.timedelta | None = None  # default: the profile's
    requested_by: str = "system"  # for the audit log


@dataclass(frozen=True)
class IssueResult:
    serial: str  # 40 lower-case hex digits
    profile: str
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint_sha256: str
    certificate_der: bytes
    chain_pem: bytes  # issuing CA then root

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.certificate_der)

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class IssueHooks:
    """Fault-injection points for tests (e.g. kill the process right after signing)."""

    after_sign: Callable[[str], None] | None = None


@dataclass(slots=True)  # private, one per certificate of a batch: a frozen __init__ costs ~10 µs
class _Plan:
    request: IssueRequest
    profile: Profile
    csr: Csr
    name: x509.Name  # the certificate's subject
    serial: int
    subject: str  # the label the CA files it under
    shard: int
    not_before: dt.datetime
    not_after: dt.datetime
    extensions: list[x509.Extension[x509.ExtensionType]]

    def builder(self, ca: CertificateAuthority) -> x509.CertificateBuilder:
        return x509.CertificateBuilder(
            issuer_name=ca.certificate.subject,
            subject_name=self.name,
            public_key=self.csr.public_key,
            serial_number=self.serial,
            not_valid_before=self.not_before,
            not_valid_after=self.not_after,
            extensions=self.extensions,
        )

    def tbs(self, assembler: Assembler) -> bytes:
        return assembler.tbs(
            serial=self.serial,
            not_before=self.not_before,
            not_after=self.not_after,
            subject=self.name,
            spki=self.csr.spki,
            extensions=self.extensions,
        )


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM or DER PKCS#10 request (RFC 2986); :class:`MalformedCsr` otherwise."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise MalformedCsr(str(exc)[:200]) from exc


def check_proof_of_possession(csr: x509.CertificateSigningRequest) -> None:
    """RFC 2986 §3: the request is signed with the private key of the key it certifies."""
    try:
        algorithm = csr.signature_hash_algorithm
    except UnsupportedAlgorithm as exc:
        raise WeakCsrSignatureAlgorithm(str(exc)[:200]) from exc
    # None: EdDSA (RFC 8410), hashing built in; the profiles' key rules decide on such keys
    if algorithm is not None and not isinstance(algorithm, _ALLOWED_CSR_HASHES):
        raise WeakCsrSignatureAlgorithm(f"CSR signed with {algorithm.name}")
    try:
        valid = csr.is_signature_valid
    except (InvalidSignature, ValueError, UnsupportedAlgorithm) as exc:
        raise BadCsrSignature(str(exc)[:200]) from exc
    if not valid:
        raise BadCsrSignature()


@dataclass(frozen=True)
class _Clock:
    """What every certificate of a batch shares about time: worked out once per batch."""

    not_before: dt.datetime
    issuer_not_after: dt.datetime

    @classmethod
    def of(cls, ca: CertificateAuthority, now: dt.datetime) -> _Clock:
        return cls(now.replace(microsecond=0) - BACKDATE, ca.certificate.not_valid_after_utc)


def _plan(
    ca: CertificateAuthority,
    request: IssueRequest,
    now: dt.datetime,
    *,
    internal: bool,
    clock: _Clock | None = None,
) -> _Plan:
    profile = PROFILES.get(request.profile)
    if profile is None:
        raise UnknownProfile(f"no profile {request.profile!r}")
    if profile.internal and not internal:
        raise UnknownProfile(f"profile {request.profile!r} is issued by the CA itself only")
    raw_csr = load_csr(request.csr)
    check_proof_of_possession(raw_csr)
    csr = Csr.of(raw_csr)
    for validate in profile.validators:
        validate(csr)
    subject = profile.subject(csr, request.device_id)
    validity = request.validity or profile.default_validity
    if validity <= dt.timedelta(0) or validity > profile.max_validity:
        raise ValidityNotAllowed(f"{validity} not within (0, {profile.max_validity}]")
    clock = clock or _Clock.of(ca, now)
    not_before = clock.not_before
    # RFC 5280 §6.1.3 (a)(2): nothing outlives its issuer
    not_after = min(not_before + BACKDATE + validity, clock.issuer_not_after)
    serial = new_serial()
    shard = serial % ca.crl_shards
    draft = Draft(ca=ca, csr=csr, subject=subject, shard=shard)
    return _Plan(
        request=request,
        profile=profile,
        csr=csr,
        name=subject.name,
        serial=serial,
        subject=subject.label,
        shard=shard,
        not_before=not_before,
        not_after=not_after,
        extensions=[modify(draft) for modify in profile.extensions],
    )


def issue(
    session: Session,
    ca: CertificateAuthority,
    request: IssueRequest,
    *,
    now: dt.datetime | None = None,
    hooks: IssueHooks | None = None,
    commit: bool = True,
) -> IssueResult:
    """Check ``request`` against its profile and issue one certificate. Commits ``session``
    (see :func:`issue_batch` for ``commit``)."""
    return issue_batch(session, ca, [request], now=now, hooks=hooks, commit=commit)[0]


def issue_batch(
    session: Session,
    ca: CertificateAuthority,
    requests: Sequence[IssueRequest],
    *,
    now: dt.datetime | None = None,
    hooks: IssueHooks | None = None,
    _internal: bool = False,
    commit: bool = True,
) -> list[IssueResult]:
    """Issue many certificates: all requests are checked first; one refusal refuses the batch.

    Commits ``session`` twice: the pending records before signing (always: no certificate may
    exist that the CA does not know), the certificates after. ``commit=False`` leaves the second
    commit to the caller, so that what it stores about the certificate (a device row) commits
    with it; if the caller rolls back instead, the certificate stays recorded as pending.
    """
    now = now or utcnow()
    plans: list[_Plan] = []
    clock = _Clock.of(ca, now)
    for index, request in enumerate(requests):
        try:
            plans.append(_plan(ca, request, now, internal=_internal, clock=clock))
        except PkiError as exc:
            session.rollback()
            audit.record(
                session,
                action="pki.certificate.issue",
                outcome="denied",
                actor=request.requested_by,
                subject=request.device_id or "",
                reason=exc.code,
                details={"profile": request.profile, "index": index, "detail": exc.detail},
            )
            session.commit()
            raise
    if not plans:
        return []

    # 1. Record the intent: after this commit the CA knows every serial it is about to sign.
    driver.executemany(
        session,
        insert(_TABLE),
        [
            {
                "serial": serial_hex(p.serial),
                "issuer_id": ca.id,
                "profile": p.profile.name,
                "subject": p.subject,
                "spki_sha256": p.csr.spki_sha256,
                "not_before": p.not_before,
                "not_after": p.not_after,
                "status": PENDING,
                "shard": p.shard,
                "created_at": now,
            }
            for p in plans
        ],
    )
    session.commit()

    # 2. Sign (the key never leaves the key store; for PKCS#11 the token signs).
    signer = ca.signer()
    chain_pem = ca.certificate.public_bytes(serialization.Encoding.PEM) + ca.root_certificate.public_bytes(
        serialization.Encoding.PEM
    )
    results: list[IssueResult] = []
    after_sign = hooks.after_sign if hooks else None
    assembler: Assembler | None = Assembler(ca.certificate, signer)  # see pki/cert_der.py
    checked: set[str] = set()
    for p in plans:
        if assembler is not None and p.profile.name in checked:
            der = assembler.certificate(p.tbs(assembler))
        else:
            # cryptography builds the first certificate of each profile (and all of them if
            # the assembler ever disagrees with it)
            reference = p.builder(ca).sign(signer, hashes.SHA256())
            if assembler is not None and reference.tbs_certificate_bytes != p.tbs(assembler):
                assembler = None
            checked.add(p.profile.name)
            der = reference.public_bytes(serialization.Encoding.DER)
        if after_sign is not None:
            after_sign(serial_hex(p.serial))
        results.append(
            IssueResult(
                serial=serial_hex(p.serial),
                profile=p.profile.name,
                subject=p.subject,
                not_before=p.not_before,
                not_after=p.not_after,
                fingerprint_sha256=hashlib.sha256(der).hexdigest(),
                certificate_der=der,
                chain_pem=chain_pem,
            )
        )

    # 3. Store what was signed, then hand it out.
    driver.executemany(
        session,
        update(_TABLE)
        .where(_TABLE.c.serial == bindparam("b_serial"), _TABLE.c.status == PENDING)
        .values(status=ISSUED, der=bindparam("b_der"), fingerprint_sha256=bindparam("b_fp")),
        [{"b_serial": r.serial, "b_der": r.certificate_der, "b_fp": r.fingerprint_sha256} for r in results],
    )
    actor = plans[0].request.requested_by
    if len(results) == 1:
        r = results[0]
        audit.record(
            session,
            action="pki.certificate.issue",
            outcome="success",
            actor=actor,
            subject=r.subject,
            details={"serial": r.serial, "profile": r.profile, "not_after": r.not_after},
        )
    else:
        audit.record(
            session,
            action="pki.certificate.issue_batch",
            outcome="success",
            actor=actor,
            subject=f"{len(results)} certificates",
            details={"serials": [r.serial for r in results]},
        )
    if commit:
        session.commit()
    return results
