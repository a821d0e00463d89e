"""Android Key Attestation: the real Google vector, then one test per check flipping it."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attestation import (
    AndroidApp,
    AndroidKeyEvidence,
    AppIdMismatch,
    BootStateUnverified,
    CertificateExpired,
    CertificateRevoked,
    ChainInvalid,
    ChallengeMismatch,
    DeviceUnlocked,
    KeyNotGenerated,
    MalformedEvidence,
    RevocationList,
    SecurityLevel,
    SecurityLevelTooLow,
    SignatureInvalid,
    TrustStore,
    UntrustedRoot,
    verify,
)
from smartcard.evidence import (
    KEY_DESCRIPTION_OID,
    TestCa,
    key_description,
    make_android_key_attestation,
    make_intermediate,
    make_test_root,
)

from .conftest import CITY_ANDROID, CITY_DIGEST, CITY_PACKAGE, NOW, VECTORS

# The real vector's own clock: every certificate is valid 2023-02-19T18:28:36Z..2023-03-24.
VECTOR_NOW = datetime(2023, 3, 1, tzinfo=UTC)
VECTOR_DIGEST = bytes.fromhex("68856d1d06f637d6255face5b224db43a9514ace538bb1548b844480fcd85c87")
VECTOR_APP = AndroidApp("com.google.attestationexample", frozenset({VECTOR_DIGEST}))
TEE_INTERMEDIATE_SERIAL = "d05facf443ed535548d994f6845e6d3c"


def _verify_real(chain: list[bytes], trust: TrustStore, **kw: Any) -> Any:
    args: dict[str, Any] = {"challenge": b"challenge", "expected_app": VECTOR_APP, "now": VECTOR_NOW}
    args.update(kw)
    return verify(AndroidKeyEvidence(tuple(chain)), trust=trust, **args)


# --- the real vector (google/android-key-attestation normal_cert_chain.pem) -----------------


def test_android_real_tee_chain_verifies_to_google_root(real_android_chain, real_trust):
    result = _verify_real(real_android_chain, real_trust)
    assert result.format == "android-key"
    assert result.security_level is SecurityLevel.TEE
    assert result.device.verified_boot_state == "verified"
    assert result.device.device_locked is True
    assert result.device.os_version == 130000
    assert result.device.os_patch_level == 202302
    assert result.app.package == "com.google.attestationexample"
    assert result.app.signing_cert_digests == (VECTOR_DIGEST,)
    leaf = x509.load_der_x509_certificate(real_android_chain[0])
    assert result.public_key == leaf.public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    assert len(result.trust_path) == 5
    assert result.warnings == ("android-revocation-list-missing",)


def test_android_real_chain_is_expired_today(real_android_chain, real_trust):
    with pytest.raises(CertificateExpired):
        _verify_real(real_android_chain, real_trust, now=datetime.now(UTC))


def test_android_challenge_mismatch_is_refused(real_android_chain, real_trust):
    with pytest.raises(ChallengeMismatch):
        _verify_real(real_android_chain, real_trust, challenge=b"challengf")


def test_android_wrong_package_is_refused(real_android_chain, real_trust):
    app = AndroidApp("de.stadt.cityid", frozenset({VECTOR_DIGEST}))
    with pytest.raises(AppIdMismatch):
        _verify_real(real_android_chain, real_trust, expected_app=app)


def test_android_wrong_signing_digest_is_refused(real_android_chain, real_trust):
    app = AndroidApp("com.google.attestationexample", frozenset({b"\x00" * 32}))
    with pytest.raises(AppIdMismatch):
        _verify_real(real_android_chain, real_trust, expected_app=app)


def test_android_strongbox_required_refuses_tee(real_android_chain, real_trust):
    app = AndroidApp(
        "com.google.attestationexample",
        frozenset({VECTOR_DIGEST}),
        min_security_level=SecurityLevel.STRONGBOX,
    )
    with pytest.raises(SecurityLevelTooLow):
        _verify_real(real_android_chain, real_trust, expected_app=app)


def test_android_revoked_intermediate_is_refused(real_android_chain):
    status = RevocationList.from_json(
        json.dumps(
            {"entries": {TEE_INTERMEDIATE_SERIAL.upper(): {"status": "REVOKED", "reason": "KEY_COMPROMISE"}}}
        ),
        fetched_at=VECTOR_NOW,
    )
    with pytest.raises(CertificateRevoked):
        _verify_real(real_android_chain, TrustStore.default(android_revocations=status))


def test_android_suspended_certificate_is_refused(real_android_chain):
    status = RevocationList.from_json(
        json.dumps({"entries": {TEE_INTERMEDIATE_SERIAL: {"status": "SUSPENDED"}}}),
        fetched_at=VECTOR_NOW,
    )
    with pytest.raises(CertificateRevoked):
        _verify_real(real_android_chain, TrustStore.default(android_revocations=status))


def test_android_google_status_list_format_parses_and_passes_unlisted_chain(real_android_chain):
    # Source: google/android-key-attestation server/src/test/resources/status.json
    raw = (VECTORS / "android-key" / "google_status_test.json").read_bytes()
    status = RevocationList.from_json(raw, fetched_at=VECTOR_NOW - timedelta(hours=1))
    assert int("cc66e9a93713b6e643b26c15879786f7", 16) in status.entries
    result = _verify_real(real_android_chain, TrustStore.default(android_revocations=status))
    assert result.warnings == ()


def test_android_stale_revocation_list_is_a_warning_not_a_silent_pass(real_android_chain):
    status = RevocationList.from_json('{"entries": {}}', fetched_at=VECTOR_NOW - timedelta(days=3))
    result = _verify_real(real_android_chain, TrustStore.default(android_revocations=status))
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("android-revocation-list-stale")


def test_android_real_chain_under_foreign_root_is_untrusted(real_android_chain, test_trust):
    with pytest.raises(UntrustedRoot):
        _verify_real(real_android_chain, test_trust)


def test_android_chain_without_root_copy_still_anchors(real_android_chain, real_trust):
    result = _verify_real(real_android_chain[:-1], real_trust)
    assert len(result.trust_path) == 5


# --- generated evidence from a TEST root: one property flipped per case -------------------


def _chain(root: TestCa, **knobs: Any) -> list[bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    args: dict[str, Any] = {
        "public_key": key.public_key(),
        "challenge": b"server-challenge-0001",
        "package": CITY_PACKAGE,
        "signing_digest": CITY_DIGEST,
        "root": root,
        "now": NOW,
    }
    args.update(knobs)
    return make_android_key_attestation(**args)


def _verify(chain: list[bytes], trust: TrustStore, challenge: bytes = b"server-challenge-0001"):
    return verify(
        AndroidKeyEvidence(tuple(chain)),
        challenge=challenge,
        expected_app=CITY_ANDROID,
        trust=trust,
        now=NOW,
    )


def test_android_generated_evidence_verifies(test_root, test_trust):
    result = _verify(_chain(test_root, model=b"Pixel TEST"), test_trust)
    assert result.security_level is SecurityLevel.TEE
    assert result.device.model == "Pixel TEST"
    assert result.app.package == CITY_PACKAGE


def test_android_strongbox_is_reported(test_root, test_trust):
    result = _verify(_chain(test_root, security_level="strongbox"), test_trust)
    assert result.security_level is SecurityLevel.STRONGBOX


@pytest.mark.parametrize(
    ("knobs", "error"),
    [
        pytest.param({"security_level": "software"}, SecurityLevelTooLow, id="software-level"),
        pytest.param({"keymint_security_level": "software"}, SecurityLevelTooLow, id="km-software"),
        pytest.param({"boot_state": "unverified"}, BootStateUnverified, id="boot-unverified"),
        pytest.param({"boot_state": "self-signed"}, BootStateUnverified, id="boot-self-signed"),
        pytest.param({"boot_state": "failed"}, BootStateUnverified, id="boot-failed"),
        pytest.param({"locked": False}, DeviceUnlocked, id="device-unlocked"),
        pytest.param({"origin": 2}, KeyNotGenerated, id="origin-imported"),
        pytest.param({"package": "com.evil.app"}, AppIdMismatch, id="wrong-package"),
        pytest.param({"signing_digest": b"\x01" * 32}, AppIdMismatch, id="wrong-signer"),
        pytest.param({"challenge": b"another-challenge"}, ChallengeMismatch, id="wrong-challenge"),
        pytest.param({"leaf_not_after": NOW - timedelta(seconds=1)}, CertificateExpired, id="leaf-expired"),
    ],
)
def test_android_flipped_property_is_refused(test_root, test_trust, knobs, error):
    with pytest.raises(error):
        _verify(_chain(test_root, **knobs), test_trust)


def test_android_expired_intermediate_is_refused(test_root, test_trust):
    old = make_intermediate(
        test_root, "TEE", not_before=NOW - timedelta(days=10), not_after=NOW - timedelta(days=1)
    )
    with pytest.raises(CertificateExpired):
        _verify(_chain(test_root, intermediates=[old]), test_trust)


def test_android_intermediate_not_yet_valid_is_refused(test_root, test_trust):
    future = make_intermediate(
        test_root, "TEE", not_before=NOW + timedelta(days=1), not_after=NOW + timedelta(days=9)
    )
    with pytest.raises(CertificateExpired):
        _verify(_chain(test_root, intermediates=[future]), test_trust)


def test_android_expired_trust_anchor_is_refused(test_root):
    old_root = make_test_root(now=NOW - timedelta(days=30), lifetime=timedelta(days=10))
    trust = TrustStore.of(google_roots=[old_root.certificate])
    with pytest.raises(CertificateExpired):
        _verify(_chain(old_root), trust)


def test_android_issuer_without_ca_flag_is_refused_rfc5280_6_1_4_k(test_root, test_trust):
    not_ca = make_intermediate(test_root, "TEE", ca=False, now=NOW)
    with pytest.raises(ChainInvalid):
        _verify(_chain(test_root, intermediates=[not_ca]), test_trust)


def test_android_path_length_exceeded_is_refused_rfc5280_6_1_4_l(test_root, test_trust):
    upper = make_intermediate(test_root, "Droid CA2 TEST", path_length=0, now=NOW)
    lower = make_intermediate(upper, "TEE", now=NOW)
    with pytest.raises(ChainInvalid):
        _verify(_chain(test_root, intermediates=[upper, lower]), test_trust)


def test_android_path_length_respected_passes(test_root, test_trust):
    upper = make_intermediate(test_root, "Droid CA2 TEST", path_length=1, now=NOW)
    lower = make_intermediate(upper, "TEE", now=NOW)
    assert _verify(_chain(test_root, intermediates=[upper, lower]), test_trust)


def test_android_issuer_without_key_cert_sign_is_refused_rfc5280_6_1_4_n(test_root, test_trust):
    no_sign = make_intermediate(test_root, "TEE", key_cert_sign=False, now=NOW)
    with pytest.raises(ChainInvalid):
        _verify(_chain(test_root, intermediates=[no_sign]), test_trust)


def test_android_foreign_root_is_refused(test_trust):
    foreign = make_test_root("someone else's root", now=NOW)
    with pytest.raises(UntrustedRoot):
        _verify(_chain(foreign), test_trust)


def test_android_forged_leaf_signature_is_refused(test_root, test_trust):
    good = _chain(test_root)
    forged = _chain(test_root)  # a different intermediate signed this leaf
    with pytest.raises((SignatureInvalid, ChainInvalid)):
        _verify([forged[0], *good[1:]], test_trust)


def test_android_key_description_in_intermediate_is_refused(test_root, test_trust):
    # an app-held ATTEST_KEY chain: the intermediate carries an attestation record too
    kd = key_description(challenge=b"x", package=CITY_PACKAGE, signing_digests=[CITY_DIGEST])
    attest_key = make_intermediate(
        test_root,
        "attest key",
        now=NOW,
        extensions=[x509.UnrecognizedExtension(KEY_DESCRIPTION_OID, kd)],
    )
    with pytest.raises(MalformedEvidence):
        _verify(_chain(test_root, intermediates=[attest_key]), test_trust)


def test_android_app_id_in_hardware_list_is_accepted(test_root, test_trust):
    kd = key_description(
        challenge=b"server-challenge-0001",
        package=CITY_PACKAGE,
        signing_digests=[CITY_DIGEST],
        app_id_in_hardware_list=True,
    )
    assert _verify(_chain(test_root, raw_key_description=kd), test_trust)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x30\x03\x02\x01", id="truncated"),
        pytest.param(b"\x04\x02hi", id="not-a-sequence"),
        pytest.param(b"\x30\x00", id="empty-sequence"),
    ],
)
def test_android_garbage_key_description_is_malformed(test_root, test_trust, raw):
    with pytest.raises(MalformedEvidence):
        _verify(_chain(test_root, raw_key_description=raw or b"\x05\x00"), test_trust)


@pytest.mark.parametrize(
    "chain",
    [
        pytest.param([], id="empty-chain"),
        pytest.param([b"garbage"], id="garbage-der"),
        pytest.param([b"\x30\x82\x01"], id="truncated-der"),
    ],
)
def test_android_garbage_der_chain_is_malformed(test_trust, chain):
    with pytest.raises(MalformedEvidence):
        _verify(chain, test_trust)


def test_android_truncated_real_leaf_is_malformed(real_android_chain, real_trust):
    with pytest.raises(MalformedEvidence):
        _verify_real([real_android_chain[0][:-40], *real_android_chain[1:]], real_trust)


def test_android_signing_digest_config_must_be_sha256():
    with pytest.raises(ValueError):
        AndroidApp(CITY_PACKAGE, frozenset({hashlib.sha1(b"x").digest()}))
