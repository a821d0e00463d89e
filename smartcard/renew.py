"""Renewal before expiry, asked for with a proof by the current key (its valid certificate).

Same key: the device record keeps its attestation unless ``renew_requires_attestation``.
New key (or attestation required): fresh attestation bound to a renewal challenge, judged by
``policies`` again; without it the key counts as software (never above *low*).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from dataclasses import dataclass

from sqlalchemy.orm import Session

import pki
from attestation import Evidence
from policies import DeviceAssessment, Level, Reason
from smartcard import challenges, proof
from smartcard.enroll import CheckedKey, EnrolResult, certify, check_key, csr_key, result_of
from smartcard.errors import AttestationFailed, InvalidRequest, RenewalNotAllowed
from smartcard.models import RENEW, Device
from smartcard.settings import SmartcardSettings
from smartcard.wire import evidence_from_json


@dataclass(frozen=True)
class RenewalChallenge:
    challenge: str
    expires_at: dt.datetime


def renewal_challenge(
    session: Session,
    ca: pki.CertificateAuthority,
    settings: SmartcardSettings,
    token: str,
    *,
    url: str,
    now: dt.datetime,
) -> RenewalChallenge:
    verified = proof.verify(session, ca, token, method="POST", url=url, now=now, window=settings.proof_window)
    issued, _ = challenges.create(
        session,
        purpose=RENEW,
        account_id=verified.account_id,
        device_id=verified.device_id,
        ttl=settings.challenge_ttl,
        now=now,
    )
    return RenewalChallenge(issued.value, issued.expires_at)


def renew(
    session: Session,
    ca: pki.CertificateAuthority,
    settings: SmartcardSettings,
    token: str,
    *,
    url: str,
    now: dt.datetime,
) -> EnrolResult:
    """Issue the device a new certificate; the old one is revoked ``superseded``, in the caller's
    transaction: a failure before its commit leaves the device on its old certificate."""
    verified = proof.verify(session, ca, token, method="POST", url=url, now=now, window=settings.proof_window)
    device = session.get(Device, verified.device_id)
    assert device is not None
    # renewal is for the end of a certificate's life, not a way to mint many
    if device.cert_not_after - settings.renew_before > now:
        raise RenewalNotAllowed(
            f"renewal opens {settings.renew_before} before {device.cert_not_after.isoformat()}"
        )
    claims = verified.claims
    row, raw = challenges.find(session, str(claims.get("challenge", "")))
    challenges.check_live(row, purpose=RENEW, account_id=device.account_id, now=now)
    if row.device_id != device.id:
        raise RenewalNotAllowed("the renewal challenge was issued to another device")
    challenges.mark(session, row, to="used", now=now)
    csr_b64 = claims.get("csr")
    if not isinstance(csr_b64, str):
        raise InvalidRequest("csr missing")
    csr = challenges.b64url_decode(csr_b64, "csr")
    evidence: Evidence | None = evidence_from_json(claims.get("attestation"))
    same_key = hashlib.sha256(csr_key(csr)).hexdigest() == device.spki_sha256
    if evidence is None and same_key:
        # the unchanged key (the software-key policy was applied at enrolment: a key attested
        # then cannot be attested again on Android, which is why this path exists)
        if settings.renew_requires_attestation:
            raise AttestationFailed("policy asks for fresh attestation on renewal")
        # key continuity is proven by the signature: the earlier attestation still describes it
        checked = CheckedKey(
            csr=csr,
            spki_sha256=device.spki_sha256,
            device_type=device.type,
            security_level=device.security_level,
            assessment=DeviceAssessment(
                Level(device.max_level) if device.max_level else None,
                Reason(device.assessment, "unchanged key, earlier attestation"),
            ),
            summary=device.attestation,
        )
    else:
        checked = check_key(settings, csr, evidence, raw, now)
    old_serial, old_fingerprint = device.cert_serial, device.cert_fingerprint
    issued = certify(session, ca, settings, checked.csr, device.id, device.account_id)
    device.type = checked.device_type
    device.security_level = checked.security_level
    device.max_level = int(checked.assessment.max_level) if checked.assessment.max_level else None
    device.assessment = checked.assessment.reason.code
    device.attestation = checked.summary
    device.spki_sha256 = checked.spki_sha256
    device.cert_serial = issued.serial
    device.cert_fingerprint = issued.fingerprint_sha256
    device.cert_not_after = issued.not_after
    device.renewed_at = now
    session.flush()
    # RFC 5280 §5.3.1 superseded: the old certificate is replaced
    pki.revoke(session, ca, old_serial, "superseded", actor=device.account_id, commit=False)
    return dataclasses.replace(
        result_of(device.id, issued, checked), replaced_fingerprint_sha256=old_fingerprint
    )


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()
