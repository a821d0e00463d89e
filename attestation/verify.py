"""The one entry point: typed evidence in, ``AttestationResult`` or ``AttestationError`` out."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from .android_key import verify_android_key
from .app_attest import verify_app_attest
from .config import AndroidApp, AppIdentity, AppleApp, RelyingParty, TrustStore
from .errors import AppIdMismatch, MalformedEvidence
from .result import AttestationResult
from .webauthn import check_client_data, verify_webauthn


@dataclass(frozen=True)
class AndroidKeyEvidence:
    """Android Key Attestation: the key's certificate chain, DER, leaf first."""

    certificate_chain: tuple[bytes, ...]


@dataclass(frozen=True)
class AppAttestEvidence:
    """Apple App Attest: the attestation object and the key identifier (raw 32 bytes).
    The app must have passed SHA-256(challenge) as clientDataHash to ``attestKey``."""

    attestation_object: bytes
    key_id: bytes


@dataclass(frozen=True)
class WebAuthnEvidence:
    """WebAuthn registration: attestationObject and clientDataJSON as the browser sent them."""

    attestation_object: bytes
    client_data_json: bytes


Evidence = AndroidKeyEvidence | AppAttestEvidence | WebAuthnEvidence
T = TypeVar("T", AndroidApp, AppleApp, RelyingParty)


def _pick(apps: Iterable[AppIdentity], kind: type[T]) -> T:
    for app in apps:
        if isinstance(app, kind):
            return app
    raise AppIdMismatch(f"no {kind.__name__} is configured for this kind of evidence")


def verify(
    evidence: Evidence,
    *,
    challenge: bytes,
    expected_app: AppIdentity | Iterable[AppIdentity],
    trust: TrustStore,
    now: datetime,
) -> AttestationResult:
    """Verify ``evidence`` bound to ``challenge`` for the city's app (or relying party).

    ``expected_app`` is one ``AndroidApp`` / ``AppleApp`` / ``RelyingParty`` or several; the
    one matching the evidence's platform is used. ``now`` must be an aware UTC datetime.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime (UTC)")
    apps: tuple[AppIdentity, ...] = (
        (expected_app,)
        if isinstance(expected_app, AndroidApp | AppleApp | RelyingParty)
        else tuple(expected_app)
    )
    if isinstance(evidence, AndroidKeyEvidence):
        return verify_android_key(
            evidence.certificate_chain,
            challenge=challenge,
            app=_pick(apps, AndroidApp),
            trust=trust,
            now=now,
        )
    if isinstance(evidence, AppAttestEvidence):
        return verify_app_attest(
            evidence.attestation_object,
            key_id=evidence.key_id,
            client_data_hash=hashlib.sha256(challenge).digest(),
            app=_pick(apps, AppleApp),
            trust=trust,
            now=now,
        )
    if isinstance(evidence, WebAuthnEvidence):
        rp = _pick(apps, RelyingParty)
        client_data_hash = check_client_data(evidence.client_data_json, challenge=challenge, rp=rp)
        return verify_webauthn(
            evidence.attestation_object, client_data_hash, rp=rp, trust=trust.webauthn, now=now
        )
    raise MalformedEvidence(f"unknown evidence type {type(evidence).__name__}")
