"""The city seal: prepare, sign with the seal key where it lives, finish; one audit entry each."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.orm import Session

import pki
from db import audit
from pki.seal import Seal, active_seal, seal_signer
from signing.errors import SigningError
from signing.inputs import DEFAULT_MAX_SIZE
from signing.pades import Level, SigningContext, Visible, finish, prepare


class NoSeal(SigningError):
    code = "no_seal"
    description = "there is no city seal yet: run `cityid seal init`"


class SealNotValid(SigningError):
    code = "seal_not_valid"
    description = "the city seal's certificate is revoked or expired: run `cityid seal init`"


@dataclass(frozen=True)
class Sealed:
    pdf: bytes
    document_sha256: str  # of the input
    sealed_sha256: str  # of the output
    level: Level
    seal_serial: str


def seal_pdf(
    pdf: bytes,
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    key: ec.EllipticCurvePrivateKey,
    context: SigningContext,
    *,
    level: Level = Level.B_LT,
    reason: str | None = None,
    location: str | None = None,
    visible: Visible | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> bytes:
    """Seal one document with ``key`` (a key store signer: its ``sign`` may run in an HSM)."""
    prepared = prepare(
        pdf,
        certificate,
        chain,
        level=level,
        reason=reason,
        location=location,
        visible=visible,
        max_size=max_size,
    )
    signature = key.sign(prepared.to_be_signed, ec.ECDSA(hashes.SHA256()))
    return finish(prepared, signature, context)


def seal_documents(
    session: Session,
    ca: pki.CertificateAuthority,
    documents: Sequence[bytes],
    context: SigningContext,
    *,
    level: Level = Level.B_LT,
    reason: str | None = None,
    visible: Visible | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    actor: str = "system",
) -> list[Sealed]:
    """Seal each document with the active city seal; an audit entry per seal (the document's
    hash, never the document). A document that cannot be sealed raises its typed error after
    the refusal is audited; the documents before it are sealed and audited."""
    seal = active_seal(session, ca)
    if seal is None:
        raise NoSeal()
    if not pki.status(session, seal.serial).is_good():  # RFC 5280 §6.1.3 (a)(2)-(3), as a validator would
        _audit(session, seal, actor, "denied", "", level, SealNotValid.code)
        raise SealNotValid()
    key = seal_signer(ca, seal)
    out: list[Sealed] = []
    for pdf in documents:
        digest = hashlib.sha256(pdf).hexdigest()
        try:
            signed = seal_pdf(
                pdf,
                seal.certificate,
                seal.chain,
                key,
                context,
                level=level,
                reason=reason,
                visible=visible,
                max_size=max_size,
            )
        except SigningError as exc:
            _audit(session, seal, actor, "failure", digest, level, exc.code)
            raise
        result = Sealed(signed, digest, hashlib.sha256(signed).hexdigest(), level, seal.serial)
        _audit(session, seal, actor, "success", digest, level, "", sealed_sha256=result.sealed_sha256)
        out.append(result)
    return out


def _audit(
    session: Session,
    seal: Seal,
    actor: str,
    outcome: str,
    digest: str,
    level: Level,
    reason: str,
    **extra: str,
) -> None:
    audit.record(
        session,
        action="signing.seal",
        outcome=outcome,
        actor=actor,
        subject=seal.certificate.subject.rfc4514_string(),
        reason=reason,
        details={"document_sha256": digest, "level": level.value, "seal_serial": seal.serial, **extra},
    )
    session.commit()
