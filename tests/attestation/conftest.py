"""Fixtures for the attestation tests: real vectors, a TEST root, the city's app identities."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from attestation import AndroidApp, AppleApp, RelyingParty, TrustStore
from smartcard.evidence import TestCa, make_test_root

VECTORS = Path(__file__).parent / "vectors"
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)

CITY_PACKAGE = "de.stadt.cityid"
CITY_DIGEST = hashlib.sha256(b"cityid app signing certificate").digest()
CITY_ANDROID = AndroidApp(CITY_PACKAGE, frozenset({CITY_DIGEST}))
CITY_APPLE = AppleApp("ABCDE12345", "de.stadt.cityid")
CITY_RP = RelyingParty("id.stadt.de", frozenset({"https://id.stadt.de"}))


def load_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return data


def b64(value: str) -> bytes:
    return base64.b64decode(value)


@pytest.fixture(scope="session")
def real_android_chain() -> list[bytes]:
    # Source: google/android-key-attestation server/src/test/resources/normal_cert_chain.pem
    pem = (VECTORS / "android-key" / "normal_cert_chain.pem").read_bytes()
    return [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem)]


@pytest.fixture(scope="session")
def real_trust() -> TrustStore:
    return TrustStore.default()


@pytest.fixture(scope="session")
def test_root() -> TestCa:
    return make_test_root(now=NOW)


@pytest.fixture(scope="session")
def test_trust(test_root: TestCa) -> TrustStore:
    return TrustStore.of(google_roots=[test_root.certificate], apple_app_attest_roots=[test_root.certificate])
