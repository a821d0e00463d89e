"""Enrolment: challenge -> CSR + attestation -> policy -> ``device-auth`` certificate -> device.

The steps read top-down as the list of checks (ARCHITECTURE.md, main flow 2).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

import attestation
import pki
from attestation import AttestationError, AttestationResult, Evidence
from db import new_id
from pki.issuance import check_proof_of_possession
from policies import DeviceAssessment, DeviceAttestationFacts, Level, assess_device
from smartcard import challenges
from smartcard.errors import AttestationFailed, DeviceNotEligible, InvalidCsr, InvalidRequest, KeyMismatch
from smartcard.models import ENROL, Device, DeviceGrant
from smartcard.settings import SmartcardSettings

_DEVICES = cast(Table, Device.__table__)
_GRANTS = cast(Table, DeviceGrant.__table__)
_INSERT_DEVICE = insert(_DEVICES)
_INSERT_GRANT = insert(_GRANTS)
MAX_NAME = 100
SOFTWARE = "software"


@dataclass(frozen=True)
class EnrolRequest:
    account_id: str
    challenge: str  # base64url, as the challenge endpoint handed it out
    csr: bytes  # PKCS#10, PEM or DER
    evidence: Evidence | None  # None: no attestation (a software key)
    name: str
    dpop_jkt: str | None = None  # the DPoP key of the app's access token (revocation mapping)
    grant_id: str | None = None  # the app's token family (revocation mapping)


@dataclass(frozen=True)
class EnrolResult:
    device_id: str
    serial: str
    fingerprint_sha256: str
    certificate_pem: bytes
    chain_pem: bytes  # issuing CA, then root
    not_after: dt.datetime
    device_type: str
    security_level: str
    max_level: Level | None
    reason_code: str
    reason_text: str
    replaced_fingerprint_sha256: str | None = None  # a renewal: the certificate it superseded


@dataclass(frozen=True)
class CheckedKey:
    """What the checks established about a new device key, before anything is issued."""

    csr: bytes
    spki_sha256: str
    device_type: str
    security_level: str
    assessment: DeviceAssessment
    summary: str  # JSON of the attestation result (audit trail on the device record)


def clean_name(name: str) -> str:
    if not isinstance(name, str):
        raise InvalidRequest("name must be a string")
    name = " ".join(name.split())
    if not 0 < len(name) <= MAX_NAME or not name.isprintable():
        raise InvalidRequest(f"name must be 1-{MAX_NAME} printable characters")
    return name


def summary(result: AttestationResult | None) -> str:
    if result is None:
        return json.dumps({"format": "none", "security_level": SOFTWARE})
    d, app = result.device, result.app
    return json.dumps(
        {
            "format": result.format,
            "security_level": str(result.security_level),
            "verified_boot_state": d.verified_boot_state,
            "device_locked": d.device_locked,
            "os_version": d.os_version,
            "os_patch_level": d.os_patch_level,
            "model": d.model,
            "environment": d.environment,
            "app": {"package": app.package, "team_id": app.team_id, "bundle_id": app.bundle_id},
            "warnings": list(result.warnings),
        },
        sort_keys=True,
    )


def csr_key(csr_data: bytes) -> bytes:
    """The SPKI (DER) of the key a CSR certifies, after its proof of possession: RFC 2986 §3 /
    RFC 4211 §4, the CSR is signed by that key."""
    try:
        csr = pki.load_csr(csr_data)
        check_proof_of_possession(csr)
    except pki.PkiError as exc:
        raise InvalidCsr(f"{exc.code}: {exc.detail}") from exc
    return csr.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def check_key(
    settings: SmartcardSettings,
    csr_data: bytes,
    evidence: Evidence | None,
    challenge: bytes,
    now: dt.datetime,
) -> CheckedKey:
    """CSR proof of possession, attestation bound to ``challenge``, same key, policy."""
    csr_spki = csr_key(csr_data)
    result: AttestationResult | None = None
    if evidence is None:
        if not settings.allow_software_keys:
            raise AttestationFailed("no attestation and software keys are not allowed")
        level, device_type = SOFTWARE, SOFTWARE
        facts = DeviceAttestationFacts(security_level=SOFTWARE, verified_boot=False, device_locked=False)
    else:
        try:
            # the attestation must carry this very challenge (freshness, no replay of evidence)
            result = attestation.verify(
                evidence, challenge=challenge, expected_app=settings.apps, trust=settings.trust, now=now
            )
        except AttestationError as exc:
            raise AttestationFailed(
                f"{type(exc).__name__}: {exc}", f"attestation refused: {type(exc).__name__}"
            ) from exc
        except ValueError as exc:
            raise AttestationFailed(str(exc)) from exc
        # the key the attestation vouches for is the key to be certified
        if not hmac.compare_digest(result.public_key, csr_spki):
            raise KeyMismatch("attested SPKI differs from the CSR's")
        level, device_type = str(result.security_level), result.format
        facts = DeviceAttestationFacts(
            security_level=level,
            verified_boot=result.device.verified_boot_state in (None, "verified"),
            device_locked=result.device.device_locked is not False,
            warnings=result.warnings,
        )
    assessment = assess_device(facts)
    if assessment.max_level is None:
        raise DeviceNotEligible(assessment.reason.text)
    return CheckedKey(
        csr=csr_data,
        spki_sha256=hashlib.sha256(csr_spki).hexdigest(),
        device_type=device_type,
        security_level=level,
        assessment=assessment,
        summary=summary(result),
    )


def certify(
    session: Session,
    ca: pki.CertificateAuthority,
    settings: SmartcardSettings,
    csr: bytes,
    device_id: str,
    actor: str,
) -> pki.IssueResult:
    try:
        return pki.issue(
            session,
            ca,
            pki.IssueRequest(
                csr,
                "device-auth",
                device_id=device_id,
                validity=settings.certificate_validity,
                requested_by=actor,
            ),
            commit=False,  # "issued" commits with the device row (the caller's unit of work)
        )
    except pki.PkiError as exc:
        raise InvalidCsr(f"{exc.code}: {exc.detail}") from exc


def result_of(device_id: str, issued: pki.IssueResult, checked: CheckedKey) -> EnrolResult:
    return EnrolResult(
        device_id=device_id,
        serial=issued.serial,
        fingerprint_sha256=issued.fingerprint_sha256,
        certificate_pem=issued.certificate_pem,
        chain_pem=issued.chain_pem,
        not_after=issued.not_after,
        device_type=checked.device_type,
        security_level=checked.security_level,
        max_level=checked.assessment.max_level,
        reason_code=checked.assessment.reason.code,
        reason_text=checked.assessment.reason.text,
    )


def enrol(
    session: Session,
    ca: pki.CertificateAuthority,
    settings: SmartcardSettings,
    request: EnrolRequest,
    *,
    now: dt.datetime,
) -> EnrolResult:
    """Enrol a device key. Commits ``session`` once (``pki.issue`` records the serial before it
    signs); the certificate, the device row and the rest commit with the caller's transaction."""
    name = clean_name(request.name)
    # single use, five minutes, this account, purpose enrolment
    challenge = challenges.consume(
        session, request.challenge, purpose=ENROL, account_id=request.account_id, now=now
    )
    checked = check_key(settings, request.csr, request.evidence, challenge, now)
    device_id = new_id()
    issued = certify(session, ca, settings, checked.csr, device_id, request.account_id)
    max_level = checked.assessment.max_level
    # Core statements on the session's transaction: the device row and the token family it
    # came from are committed by the caller together with the rest of the request
    conn = session.connection()
    conn.execute(
        _INSERT_DEVICE,
        {
            "id": device_id,
            "account_id": request.account_id,
            "name": name,
            "type": checked.device_type,
            "security_level": checked.security_level,
            "max_level": int(max_level) if max_level else None,
            "assessment": checked.assessment.reason.code,
            "attestation": checked.summary,
            "spki_sha256": checked.spki_sha256,
            "cert_serial": issued.serial,
            "cert_fingerprint": issued.fingerprint_sha256,
            "cert_not_after": issued.not_after,
            "dpop_jkt": request.dpop_jkt,
            "enrolled_at": now,
        },
    )
    if request.grant_id:
        conn.execute(_INSERT_GRANT, {"device_id": device_id, "grant_id": request.grant_id})
    return result_of(device_id, issued, checked)


def spki_of(cert_der: bytes) -> bytes:
    cert = x509.load_der_x509_certificate(cert_der)
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
