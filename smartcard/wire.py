"""Attestation evidence as the device API carries it (JSON, base64) -> typed ``attestation`` evidence."""

from __future__ import annotations

import base64
from typing import Any

from attestation import AndroidKeyEvidence, AppAttestEvidence, Evidence
from smartcard.errors import InvalidRequest

MAX_CHAIN = 8


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value or len(value) > 64_000:
        raise InvalidRequest(f"{what} must be a base64 string")
    try:
        # standard or url-safe alphabet, padding optional
        text = value.replace("-", "+").replace("_", "/")
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError as exc:
        raise InvalidRequest(f"{what} is not base64") from exc


def evidence_from_json(obj: Any) -> Evidence | None:
    """``None`` (no attestation: a software key), or Android / App Attest evidence."""
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise InvalidRequest("attestation must be an object or null")
    fmt = obj.get("format")
    if fmt == "android-key":
        chain = obj.get("certificate_chain")
        if not isinstance(chain, list) or not 0 < len(chain) <= MAX_CHAIN:
            raise InvalidRequest(f"certificate_chain must be a list of 1-{MAX_CHAIN} certificates")
        return AndroidKeyEvidence(tuple(_b64(c, "certificate_chain entry") for c in chain))
    if fmt == "apple-appattest":
        return AppAttestEvidence(
            attestation_object=_b64(obj.get("attestation_object"), "attestation_object"),
            key_id=_b64(obj.get("key_id"), "key_id"),
        )
    raise InvalidRequest("attestation.format must be android-key or apple-appattest")


def evidence_to_json(evidence: Evidence | None) -> dict[str, Any] | None:
    if evidence is None:
        return None
    if isinstance(evidence, AndroidKeyEvidence):
        return {
            "format": "android-key",
            "certificate_chain": [base64.b64encode(c).decode() for c in evidence.certificate_chain],
        }
    if isinstance(evidence, AppAttestEvidence):
        return {
            "format": "apple-appattest",
            "attestation_object": base64.b64encode(evidence.attestation_object).decode(),
            "key_id": base64.b64encode(evidence.key_id).decode(),
        }
    raise InvalidRequest("unsupported evidence")
