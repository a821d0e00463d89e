"""Apple App Attest: two real iPhone attestations and a real assertion, then flipped checks."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from attestation import (
    AaguidMismatch,
    AppAttestEvidence,
    AppleApp,
    CertificateExpired,
    ChallengeMismatch,
    CounterNotIncreasing,
    KeyMismatch,
    MalformedEvidence,
    RpIdMismatch,
    SecurityLevel,
    SignatureInvalid,
    TrustStore,
    UnsupportedFormat,
    UntrustedRoot,
    verify,
    verify_app_attest,
    verify_app_attest_assertion,
)
from smartcard.evidence import (
    AAGUID_APP_ATTEST_DEVELOPMENT,
    cbor_encode,
    make_app_attest_assertion,
    make_app_attest_attestation,
    make_test_root,
)

from .conftest import CITY_APPLE, NOW, b64, load_json

# Source: Apple "Attestation Object Validation Guide" sample (see vectors/README.md)
APPLE_GUIDE = load_json("app-attest/apple_guide_production.json")
# Source: veehaitch/devicecheck-appattest src/test/resources/ios-14.4.yaml
IOS14 = load_json("app-attest/ios14_4_development.json")
IOS14_APP = AppleApp(IOS14["team_id"], IOS14["bundle_id"], allow_development=True)
IOS14_NOW = datetime(2021, 1, 23, 12, 13, 33, tzinfo=UTC)


def _guide(trust: TrustStore, **kw: Any):
    args: dict[str, Any] = {
        "key_id": b64(APPLE_GUIDE["key_id_b64"]),
        # Apple's sample app passed the challenge bytes themselves as clientDataHash
        "client_data_hash": APPLE_GUIDE["client_data_hash_utf8"].encode(),
        "app": AppleApp(APPLE_GUIDE["team_id"], APPLE_GUIDE["bundle_id"]),
        "trust": trust,
        "now": datetime(2024, 4, 18, 12, tzinfo=UTC),
    }
    args.update(kw)
    return verify_app_attest(b64(APPLE_GUIDE["attestation_b64"]), **args)


def _ios14(trust: TrustStore, **kw: Any):
    args: dict[str, Any] = {
        "challenge": b64(IOS14["challenge_b64"]),
        "expected_app": IOS14_APP,
        "trust": trust,
        "now": IOS14_NOW,
    }
    args.update(kw)
    evidence = AppAttestEvidence(b64(IOS14["attestation_b64"]), b64(IOS14["key_id_b64"]))
    return verify(evidence, **args)


# --- real evidence -----------------------------------------------------------------------


def test_app_attest_apple_guide_sample_verifies_in_production(real_trust):
    result = _guide(real_trust)
    assert result.format == "apple-appattest"
    assert result.security_level is SecurityLevel.SECURE_ENCLAVE
    assert result.device.environment == "production"
    assert result.credential_id == b64(APPLE_GUIDE["key_id_b64"])
    assert result.sign_count == 0
    assert len(result.trust_path) == 3


def test_app_attest_apple_guide_sample_is_expired_today(real_trust):
    with pytest.raises(CertificateExpired):
        _guide(real_trust, now=datetime.now(UTC))


def test_app_attest_real_ios14_attestation_verifies_via_verify(real_trust):
    result = _ios14(real_trust)
    assert result.device.environment == "development"
    assert result.warnings == ("app-attest-development-environment",)
    assert result.app.team_id == "6MURL8TA57"


def test_app_attest_development_aaguid_refused_unless_configured(real_trust):
    app = AppleApp(IOS14["team_id"], IOS14["bundle_id"])
    with pytest.raises(AaguidMismatch):
        _ios14(real_trust, expected_app=app)


def test_app_attest_challenge_mismatch_is_refused(real_trust):
    with pytest.raises(ChallengeMismatch):
        _ios14(real_trust, challenge=b"wurzelpfropf!")


def test_app_attest_wrong_rp_id_hash_is_refused(real_trust):
    app = AppleApp("6MURL8TA57", "de.stadt.other", allow_development=True)
    with pytest.raises(RpIdMismatch):
        _ios14(real_trust, expected_app=app)


def test_app_attest_key_id_mismatch_is_refused(real_trust):
    with pytest.raises(KeyMismatch):
        _guide(real_trust, key_id=b"\x00" * 32)


def test_app_attest_real_chain_under_foreign_root_is_untrusted(test_trust):
    with pytest.raises(UntrustedRoot):
        _ios14(test_trust)


def test_app_attest_real_assertion_verifies_with_counter_1(real_trust):
    key = _ios14(real_trust).public_key
    result = verify_app_attest_assertion(
        b64(IOS14["assertion_b64"]),
        client_data=b64(IOS14["assertion_client_data_b64"]),
        public_key=key,
        app=IOS14_APP,
        previous_sign_count=0,
    )
    assert result.sign_count == 1


def test_app_attest_assertion_counter_not_increasing_is_refused(real_trust):
    key = _ios14(real_trust).public_key
    with pytest.raises(CounterNotIncreasing):
        verify_app_attest_assertion(
            b64(IOS14["assertion_b64"]),
            client_data=b64(IOS14["assertion_client_data_b64"]),
            public_key=key,
            app=IOS14_APP,
            previous_sign_count=1,
        )


def test_app_attest_assertion_over_other_client_data_is_refused(real_trust):
    key = _ios14(real_trust).public_key
    with pytest.raises(SignatureInvalid):
        verify_app_attest_assertion(
            b64(IOS14["assertion_b64"]),
            client_data=b"something else",
            public_key=key,
            app=IOS14_APP,
            previous_sign_count=0,
        )


# --- generated evidence from a TEST root --------------------------------------------------

CHALLENGE = b"app-attest-challenge-0001"


def _make(root, **knobs: Any):
    args: dict[str, Any] = {
        "root": root,
        "team_id": CITY_APPLE.team_id,
        "bundle_id": CITY_APPLE.bundle_id,
        "client_data_hash": hashlib.sha256(CHALLENGE).digest(),
        "now": NOW,
    }
    args.update(knobs)
    return make_app_attest_attestation(**args)


def _verify(obj: bytes, key_id: bytes, trust: TrustStore, app: AppleApp = CITY_APPLE):
    return verify(AppAttestEvidence(obj, key_id), challenge=CHALLENGE, expected_app=app, trust=trust, now=NOW)


def test_app_attest_generated_evidence_verifies(test_root, test_trust):
    obj, key = _make(test_root)
    result = _verify(obj, key.key_id, test_trust)
    assert result.credential_id == key.key_id


@pytest.mark.parametrize(
    ("knobs", "error"),
    [
        pytest.param({"counter": 1}, CounterNotIncreasing, id="counter-not-zero"),
        pytest.param({"aaguid": b"appattestfake\0\0\0"}, AaguidMismatch, id="wrong-aaguid"),
        pytest.param({"aaguid": AAGUID_APP_ATTEST_DEVELOPMENT}, AaguidMismatch, id="dev-aaguid"),
        pytest.param({"credential_id": b"\x07" * 32}, KeyMismatch, id="credential-id"),
        pytest.param(
            {"credential_key": ec.generate_private_key(ec.SECP256R1()).public_key()},
            KeyMismatch,
            id="credential-key-differs-from-credcert",
        ),
        pytest.param({"rp_id": "ABCDE12345.de.evil"}, RpIdMismatch, id="wrong-rp-id-hash"),
        pytest.param({"nonce": b"\x00" * 32}, ChallengeMismatch, id="wrong-nonce"),
        pytest.param({"client_data_hash": b"\x00" * 32}, ChallengeMismatch, id="wrong-challenge"),
        pytest.param({"fmt": "packed"}, UnsupportedFormat, id="wrong-fmt"),
    ],
)
def test_app_attest_flipped_property_is_refused(test_root, test_trust, knobs, error):
    obj, key = _make(test_root, **knobs)
    with pytest.raises(error):
        _verify(obj, key.key_id, test_trust)


def test_app_attest_foreign_root_is_refused(test_trust):
    obj, key = _make(make_test_root("not Apple", now=NOW))
    with pytest.raises(UntrustedRoot):
        _verify(obj, key.key_id, test_trust)


def test_app_attest_generated_assertion_round_trip(test_root, test_trust):
    obj, key = _make(test_root)
    public_key = _verify(obj, key.key_id, test_trust).public_key
    assertion = make_app_attest_assertion(
        key,
        team_id=CITY_APPLE.team_id,
        bundle_id=CITY_APPLE.bundle_id,
        client_data=b'{"challenge":"abc"}',
        counter=5,
    )
    ok = verify_app_attest_assertion(
        assertion,
        client_data=b'{"challenge":"abc"}',
        public_key=public_key,
        app=CITY_APPLE,
        previous_sign_count=4,
    )
    assert ok.sign_count == 5
    with pytest.raises(CounterNotIncreasing):
        verify_app_attest_assertion(
            assertion,
            client_data=b'{"challenge":"abc"}',
            public_key=public_key,
            app=CITY_APPLE,
            previous_sign_count=5,
        )
    with pytest.raises(RpIdMismatch):
        verify_app_attest_assertion(
            assertion,
            client_data=b'{"challenge":"abc"}',
            public_key=public_key,
            app=AppleApp(CITY_APPLE.team_id, "de.other"),
            previous_sign_count=0,
        )


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xff\xff", id="garbage"),
        pytest.param(cbor_encode([1, 2, 3]), id="cbor-array"),
        pytest.param(cbor_encode({"fmt": "apple-appattest"}), id="no-attstmt"),
        pytest.param(
            cbor_encode({"fmt": "apple-appattest", "attStmt": {"x5c": [b"x"]}, "authData": b"a"}),
            id="garbage-inside",
        ),
    ],
)
def test_app_attest_garbage_cbor_is_malformed(test_trust, blob):
    with pytest.raises(MalformedEvidence):
        _verify(blob, b"\x00" * 32, test_trust)


def test_app_attest_truncated_real_object_is_malformed(real_trust):
    with pytest.raises(MalformedEvidence):
        verify_app_attest(
            b64(APPLE_GUIDE["attestation_b64"])[:-50],
            key_id=b64(APPLE_GUIDE["key_id_b64"]),
            client_data_hash=b"test_server_challenge",
            app=AppleApp(APPLE_GUIDE["team_id"], APPLE_GUIDE["bundle_id"]),
            trust=real_trust,
            now=datetime(2024, 4, 18, 12, tzinfo=UTC),
        )
