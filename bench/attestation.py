"""Verifications per second per attestation format, on one core, with a warm trust store.

Run: ``.venv/bin/python bench/attestation.py`` (prints JSON; bounded to a few seconds).
Android Key and App Attest use the real vectors (Google's TEE chain, Apple's guide sample) at
their own clock; WebAuthn uses the real python-fido2 vectors.
"""

from __future__ import annotations

import sys

# bench/ holds other scripts (e.g. token.py) that would shadow stdlib modules: put the repo
# root, not this folder, first on the path before anything else is imported.
sys.path[0] = __file__.rsplit("/bench/", 1)[0]

import base64
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fido2.webauthn import AttestationObject, AuthenticatorData

from attestation import (
    AnchorSet,
    AndroidApp,
    AndroidKeyEvidence,
    AppleApp,
    TrustStore,
    WebAuthnTrust,
    verify,
    verify_app_attest,
    verify_webauthn,
)

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "attestation" / "vectors"
SECONDS_PER_FORMAT = 0.8


def _rate(fn: Callable[[], object]) -> dict[str, float]:
    """Verifications per wall-clock second and per CPU second of this process (the latter is
    what one core delivers even when other processes share the machine)."""
    fn()  # warm: trust store caches, imports
    n, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while (wall := time.perf_counter() - wall0) < SECONDS_PER_FORMAT:
        for _ in range(20):
            fn()
        n += 20
    cpu = time.process_time() - cpu0
    return {"per_wall_s": round(n / wall, 1), "per_cpu_s": round(n / cpu, 1)}


def _android(trust: TrustStore) -> Callable[[], object]:
    pem = (VECTORS / "android-key" / "normal_cert_chain.pem").read_bytes()
    chain = tuple(c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem))
    digest = bytes.fromhex("68856d1d06f637d6255face5b224db43a9514ace538bb1548b844480fcd85c87")
    app = AndroidApp("com.google.attestationexample", frozenset({digest}))
    now = datetime(2023, 3, 1, tzinfo=UTC)
    return lambda: verify(
        AndroidKeyEvidence(chain), challenge=b"challenge", expected_app=app, trust=trust, now=now
    )


def _app_attest(trust: TrustStore) -> Callable[[], object]:
    v = json.loads((VECTORS / "app-attest" / "apple_guide_production.json").read_text())
    obj, key_id = base64.b64decode(v["attestation_b64"]), base64.b64decode(v["key_id_b64"])
    app = AppleApp(v["team_id"], v["bundle_id"])
    now = datetime(2024, 4, 18, 12, tzinfo=UTC)
    cdh = v["client_data_hash_utf8"].encode()
    return lambda: verify_app_attest(obj, key_id=key_id, client_data_hash=cdh, app=app, trust=trust, now=now)


def _webauthn(name: str, trust: WebAuthnTrust, now: datetime) -> Callable[[], object]:
    v = json.loads((VECTORS / "webauthn" / f"{name}.json").read_text())

    def dec(x: object) -> object:
        if isinstance(x, dict) and set(x) == {"hex"}:
            return bytes.fromhex(x["hex"])
        if isinstance(x, dict):
            return {k: dec(i) for k, i in x.items()}
        if isinstance(x, list):
            return [dec(i) for i in x]
        return x

    stmt = dec(v["attStmt"])
    assert isinstance(stmt, dict)
    obj = bytes(AttestationObject.create(v["fmt"], AuthenticatorData(bytes.fromhex(v["authData"])), stmt))
    cdh = bytes.fromhex(v["clientDataHash"])
    return lambda: verify_webauthn(obj, cdh, rp=None, trust=trust, now=now)


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    trust = TrustStore.default()

    def pem(name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate((VECTORS / "webauthn" / name).read_bytes())

    u2f = WebAuthnTrust(roots_by_format={"fido-u2f": AnchorSet([pem("yubico_u2f_root_ca_457200631.pem")])})
    tpm = WebAuthnTrust(roots_by_format={"tpm": AnchorSet([pem("microsoft_tpm_root_ca_2014.pem")])})
    results = {
        "android-key": _rate(_android(trust)),
        "apple-appattest": _rate(_app_attest(trust)),
        "webauthn-fido-u2f": _rate(_webauthn("fido_u2f_yubikey", u2f, datetime(2020, 1, 1, tzinfo=UTC))),
        "webauthn-tpm": _rate(_webauthn("tpm_windows_hello", tpm, datetime(2020, 1, 1, tzinfo=UTC))),
        "webauthn-apple": _rate(
            _webauthn("apple_webauthn", trust.webauthn, datetime(2020, 12, 29, tzinfo=UTC))
        ),
    }
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    doc = {"unit": "verifications/s", "cores": 1, "loadavg_1min": load, "results": results}
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
