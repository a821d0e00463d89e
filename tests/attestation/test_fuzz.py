"""Every parser, fed arbitrary or mutated bytes, raises nothing but AttestationError."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation import (
    AppleApp,
    AttestationError,
    TrustStore,
    WebAuthnTrust,
    check_client_data,
    verify_android_key,
    verify_app_attest,
    verify_app_attest_assertion,
    verify_webauthn,
)
from attestation.android_key import parse_key_description
from attestation.cose import cose_to_spki

from .conftest import CITY_ANDROID, CITY_APPLE, CITY_RP, VECTORS, b64, load_json

# cryptography warns (UserWarning) about over-long name attributes in mutated certificates
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# No deadline and no too_slow health check: CI machines are shared and timing is not the point.
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TRUST = TrustStore.default()
NOW = datetime(2024, 4, 18, 12, tzinfo=UTC)
GUIDE = load_json("app-attest/apple_guide_production.json")
GUIDE_OBJ = b64(GUIDE["attestation_b64"])
IOS14 = load_json("app-attest/ios14_4_development.json")
ASSERTION = b64(IOS14["assertion_b64"])
# Source: google/android-key-attestation server/src/test/resources/normal_cert_chain.pem
REAL_ANDROID = [
    c.public_bytes(Encoding.DER)
    for c in x509.load_pem_x509_certificates((VECTORS / "android-key" / "normal_cert_chain.pem").read_bytes())
]


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    buf = bytearray(data)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    return bytes(buf)


EDITS = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=4)


def _only_attestation_errors(call, *args, **kwargs) -> None:
    try:
        call(*args, **kwargs)
    except AttestationError:
        pass


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_key_description_parser(data):
    _only_attestation_errors(parse_key_description, data)


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=4))
def test_fuzz_android_chain_parser(chain):
    _only_attestation_errors(
        verify_android_key, chain, challenge=b"c", app=CITY_ANDROID, trust=TRUST, now=NOW
    )


@FUZZ
@given(EDITS)
def test_fuzz_android_mutated_real_leaf(edits):
    chain = [_mutate(REAL_ANDROID[0], edits), *REAL_ANDROID[1:]]
    _only_attestation_errors(
        verify_android_key, chain, challenge=b"challenge", app=CITY_ANDROID, trust=TRUST, now=NOW
    )


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_app_attest_parser(data):
    _only_attestation_errors(
        verify_app_attest,
        data,
        key_id=b"k" * 32,
        client_data_hash=b"h" * 32,
        app=CITY_APPLE,
        trust=TRUST,
        now=NOW,
    )


@FUZZ
@given(EDITS)
def test_fuzz_app_attest_mutated_real_object(edits):
    _only_attestation_errors(
        verify_app_attest,
        _mutate(GUIDE_OBJ, edits),
        key_id=b64(GUIDE["key_id_b64"]),
        client_data_hash=b"test_server_challenge",
        app=AppleApp(GUIDE["team_id"], GUIDE["bundle_id"]),
        trust=TRUST,
        now=NOW,
    )


@FUZZ
@given(st.binary(max_size=300), st.binary(max_size=120))
def test_fuzz_app_attest_assertion_parser(data, key):
    _only_attestation_errors(
        verify_app_attest_assertion,
        data,
        client_data=b"x",
        public_key=key,
        app=CITY_APPLE,
        previous_sign_count=0,
    )


@FUZZ
@given(EDITS)
def test_fuzz_app_attest_mutated_real_assertion(edits):
    _only_attestation_errors(
        verify_app_attest_assertion,
        _mutate(ASSERTION, edits),
        client_data=b"wurzelpfropf",
        public_key=b"\x30\x00",
        app=CITY_APPLE,
        previous_sign_count=0,
    )


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_webauthn_parser(data):
    _only_attestation_errors(verify_webauthn, data, b"\x00" * 32, rp=CITY_RP, trust=WebAuthnTrust(), now=NOW)


@pytest.mark.parametrize("name", ["tpm_windows_hello", "apple_webauthn", "fido_u2f_yubikey"])
def test_fuzz_webauthn_mutated_real_objects(name):
    from .test_webauthn import _real

    obj, cdh, _ = _real(name)
    trust = TrustStore.default().webauthn

    @FUZZ
    @given(EDITS)
    def run(edits):
        _only_attestation_errors(verify_webauthn, _mutate(obj, edits), cdh, rp=None, trust=trust, now=NOW)

    run()


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_client_data_parser(data):
    _only_attestation_errors(check_client_data, data, challenge=b"c", rp=CITY_RP)


@FUZZ
@given(
    st.dictionaries(
        st.integers(-4, 4),
        st.one_of(st.integers(-10, 10), st.binary(max_size=70), st.text(max_size=5)),
        max_size=6,
    )
)
def test_fuzz_cose_key_parser(cose):
    _only_attestation_errors(cose_to_spki, cose)
