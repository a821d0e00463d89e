"""WebAuthn: real packed / tpm / fido-u2f / apple / none from python-fido2's test suite,
MDS3 trust by AAGUID, and flipped checks on generated evidence."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.webauthn import AttestationObject, AuthenticatorData

from attestation import (
    AaguidMismatch,
    AnchorSet,
    AuthenticatorRevoked,
    CertificateExpired,
    ChallengeMismatch,
    Fido2AttestationHook,
    KeyMismatch,
    MalformedEvidence,
    RpIdMismatch,
    SecurityLevel,
    SignatureInvalid,
    TrustStore,
    UnsupportedFormat,
    UntrustedRoot,
    WebAuthnEvidence,
    WebAuthnTrust,
    load_mds3,
    verify,
    verify_webauthn,
)
from smartcard.evidence import (
    TestCa,
    make_apple_webauthn_attestation,
    make_intermediate,
    make_packed_attestation,
    make_test_root,
)

from .conftest import CITY_RP, NOW, VECTORS, load_json

YUBICO_U2F_ROOT = x509.load_pem_x509_certificate(
    (VECTORS / "webauthn" / "yubico_u2f_root_ca_457200631.pem").read_bytes()
)
MS_TPM_ROOT = x509.load_pem_x509_certificate(
    (VECTORS / "webauthn" / "microsoft_tpm_root_ca_2014.pem").read_bytes()
)


def _decode(x: Any) -> Any:
    if isinstance(x, dict) and set(x) == {"hex"}:
        return bytes.fromhex(x["hex"])
    if isinstance(x, dict):
        return {k: _decode(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_decode(i) for i in x]
    return x


def _real(name: str) -> tuple[bytes, bytes, dict[str, Any]]:
    # Source: Yubico/python-fido2 tests/test_attestation.py (see vectors/README.md)
    v = load_json(f"webauthn/{name}.json")
    stmt = _decode(v["attStmt"])
    auth = AuthenticatorData(bytes.fromhex(v["authData"]))
    return bytes(AttestationObject.create(v["fmt"], auth, stmt)), bytes.fromhex(v["clientDataHash"]), stmt


REAL_CASES = [
    pytest.param(
        "fido_u2f_yubikey",
        datetime(2020, 1, 1, tzinfo=UTC),
        lambda: WebAuthnTrust(roots_by_format={"fido-u2f": AnchorSet([YUBICO_U2F_ROOT])}),
        SecurityLevel.SECURITY_KEY,
        2,
        id="fido-u2f-yubikey",
    ),
    pytest.param(
        "tpm_windows_hello",
        datetime(2020, 1, 1, tzinfo=UTC),
        lambda: WebAuthnTrust(roots_by_format={"tpm": AnchorSet([MS_TPM_ROOT])}),
        SecurityLevel.TPM,
        3,
        id="tpm-windows-hello",
    ),
    pytest.param(
        "apple_webauthn",
        datetime(2020, 12, 29, tzinfo=UTC),
        lambda: TrustStore.default().webauthn,
        SecurityLevel.SECURE_ENCLAVE,
        3,
        id="apple-platform",
    ),
]


@pytest.mark.parametrize(("name", "now", "trust", "level", "path_len"), REAL_CASES)
def test_webauthn_real_attestation_verifies_to_vendor_root(name, now, trust, level, path_len):
    obj, cdh, _ = _real(name)
    result = verify_webauthn(obj, cdh, rp=None, trust=trust(), now=now)
    assert result.security_level is level
    assert len(result.trust_path) == path_len


@pytest.mark.parametrize(("name", "now", "trust", "level", "path_len"), REAL_CASES)
def test_webauthn_real_attestation_is_expired_long_after(name, now, trust, level, path_len):
    obj, cdh, _ = _real(name)
    with pytest.raises(CertificateExpired):
        verify_webauthn(obj, cdh, rp=None, trust=trust(), now=datetime(2051, 1, 1, tzinfo=UTC))


def test_webauthn_real_packed_verifies_with_directly_trusted_batch_cert():
    # The preview batch CA is not public; FIDO MDS3 allows the attestation cert itself as anchor.
    obj, cdh, stmt = _real("packed_yubico_preview")
    aaguid = bytes.fromhex("f8a011f38c0a4d15800617111f9edc7d")
    batch = x509.load_der_x509_certificate(stmt["x5c"][0])
    trust = WebAuthnTrust(roots_by_aaguid={aaguid: AnchorSet([batch])})
    result = verify_webauthn(obj, cdh, rp=None, trust=trust, now=datetime(2018, 6, 1, tzinfo=UTC))
    assert result.format == "packed"
    assert result.device.aaguid == aaguid


def test_webauthn_real_none_is_unattested_software():
    obj, cdh, _ = _real("none_yubikey")
    result = verify_webauthn(obj, cdh, rp=None, trust=WebAuthnTrust(), now=NOW)
    assert result.security_level is SecurityLevel.SOFTWARE
    assert result.warnings == ("webauthn-unattested",)


def test_webauthn_real_packed_without_anchor_is_untrusted():
    obj, cdh, _ = _real("packed_yubico_preview")
    with pytest.raises(UntrustedRoot):
        verify_webauthn(obj, cdh, rp=None, trust=WebAuthnTrust(), now=datetime(2018, 6, 1, tzinfo=UTC))


def test_webauthn_real_u2f_wrong_client_data_hash_is_refused():
    obj, _cdh, _ = _real("fido_u2f_yubikey")
    trust = WebAuthnTrust(roots_by_format={"fido-u2f": AnchorSet([YUBICO_U2F_ROOT])})
    with pytest.raises(SignatureInvalid):
        verify_webauthn(obj, b"\x00" * 32, rp=None, trust=trust, now=datetime(2020, 1, 1, tzinfo=UTC))


def test_webauthn_real_tpm_wrong_client_data_hash_is_challenge_mismatch():
    obj, _, _ = _real("tpm_windows_hello")
    trust = WebAuthnTrust(roots_by_format={"tpm": AnchorSet([MS_TPM_ROOT])})
    with pytest.raises(ChallengeMismatch):
        verify_webauthn(obj, b"\x00" * 32, rp=None, trust=trust, now=datetime(2020, 1, 1, tzinfo=UTC))


def test_webauthn_real_apple_wrong_client_data_hash_is_challenge_mismatch():
    obj, _, _ = _real("apple_webauthn")
    with pytest.raises(ChallengeMismatch):
        verify_webauthn(
            obj,
            b"\x00" * 32,
            rp=None,
            trust=TrustStore.default().webauthn,
            now=datetime(2020, 12, 29, tzinfo=UTC),
        )


def test_webauthn_wrong_rp_id_hash_is_refused_webauthn_7_1_step_13():
    obj, cdh, _ = _real("fido_u2f_yubikey")
    with pytest.raises(RpIdMismatch):
        verify_webauthn(obj, cdh, rp=CITY_RP, trust=WebAuthnTrust(), now=NOW)


# --- generated evidence --------------------------------------------------------------------

AAGUID = bytes.fromhex("00112233445566778899aabbccddeeff")
CDH = hashlib.sha256(b"client data").digest()


def _packed_trust(root: TestCa) -> WebAuthnTrust:
    return WebAuthnTrust(roots_by_aaguid={AAGUID: AnchorSet([root.certificate])})


def test_webauthn_packed_aaguid_mismatch_is_refused(test_root):
    obj, _ = make_packed_attestation(
        root=test_root,
        rp_id=CITY_RP.rp_id,
        client_data_hash=CDH,
        aaguid=AAGUID,
        cert_aaguid=b"\x01" * 16,
        now=NOW,
    )
    with pytest.raises(AaguidMismatch):
        verify_webauthn(obj, CDH, rp=CITY_RP, trust=_packed_trust(test_root), now=NOW)


def test_webauthn_packed_unknown_aaguid_is_untrusted(test_root):
    obj, _ = make_packed_attestation(
        root=test_root, rp_id=CITY_RP.rp_id, client_data_hash=CDH, aaguid=b"\x05" * 16, now=NOW
    )
    with pytest.raises(UntrustedRoot):
        verify_webauthn(obj, CDH, rp=CITY_RP, trust=_packed_trust(test_root), now=NOW)


def test_webauthn_packed_user_not_present_is_refused(test_root):
    from attestation import UserNotPresent

    obj, _ = make_packed_attestation(
        root=test_root, rp_id=CITY_RP.rp_id, client_data_hash=CDH, aaguid=AAGUID, flags=0x40, now=NOW
    )
    with pytest.raises(UserNotPresent):
        verify_webauthn(obj, CDH, rp=CITY_RP, trust=_packed_trust(test_root), now=NOW)


def test_webauthn_apple_credcert_key_must_equal_credential_key_webauthn_8_8(test_root):
    obj = make_apple_webauthn_attestation(
        root=test_root,
        rp_id=CITY_RP.rp_id,
        client_data_hash=CDH,
        now=NOW,
        cert_key=ec.generate_private_key(ec.SECP256R1()),
    )
    trust = WebAuthnTrust(roots_by_format={"apple": AnchorSet([test_root.certificate])})
    with pytest.raises(KeyMismatch):
        verify_webauthn(obj, CDH, rp=CITY_RP, trust=trust, now=NOW)


def test_webauthn_apple_generated_verifies(test_root):
    obj = make_apple_webauthn_attestation(root=test_root, rp_id=CITY_RP.rp_id, client_data_hash=CDH, now=NOW)
    trust = WebAuthnTrust(roots_by_format={"apple": AnchorSet([test_root.certificate])})
    assert (
        verify_webauthn(obj, CDH, rp=CITY_RP, trust=trust, now=NOW).security_level
        is SecurityLevel.SECURE_ENCLAVE
    )


def _client_data(
    challenge: bytes, origin: str = "https://id.stadt.de", kind: str = "webauthn.create"
) -> bytes:
    c = base64.urlsafe_b64encode(challenge).rstrip(b"=").decode()
    return json.dumps({"type": kind, "challenge": c, "origin": origin}).encode()


@pytest.mark.parametrize(
    ("client_data", "error"),
    [
        pytest.param(_client_data(b"other"), ChallengeMismatch, id="wrong-challenge"),
        pytest.param(_client_data(b"chal", origin="https://evil.example"), RpIdMismatch, id="wrong-origin"),
        pytest.param(_client_data(b"chal", kind="webauthn.get"), MalformedEvidence, id="wrong-type"),
        pytest.param(b"not json", MalformedEvidence, id="garbage-json"),
    ],
)
def test_webauthn_client_data_checks_webauthn_7_1_steps_7_to_9(test_root, client_data, error):
    obj, _ = make_packed_attestation(
        root=test_root,
        rp_id=CITY_RP.rp_id,
        client_data_hash=hashlib.sha256(client_data).digest(),
        aaguid=AAGUID,
        now=NOW,
    )
    trust = TrustStore.of(webauthn=_packed_trust(test_root))
    with pytest.raises(error):
        verify(
            WebAuthnEvidence(obj, client_data), challenge=b"chal", expected_app=CITY_RP, trust=trust, now=NOW
        )


def test_webauthn_verify_entry_point_round_trip(test_root):
    client_data = _client_data(b"chal")
    obj, _key = make_packed_attestation(
        root=test_root,
        rp_id=CITY_RP.rp_id,
        client_data_hash=hashlib.sha256(client_data).digest(),
        aaguid=AAGUID,
        now=NOW,
    )
    trust = TrustStore.of(webauthn=_packed_trust(test_root))
    result = verify(
        WebAuthnEvidence(obj, client_data), challenge=b"chal", expected_app=CITY_RP, trust=trust, now=NOW
    )
    assert result.security_level is SecurityLevel.SECURITY_KEY
    assert result.app.rp_id == CITY_RP.rp_id


def test_webauthn_fido2_server_hook_raises_typed_errors(test_root):
    obj, _ = make_packed_attestation(
        root=test_root, rp_id=CITY_RP.rp_id, client_data_hash=CDH, aaguid=AAGUID, now=NOW
    )
    hook = Fido2AttestationHook(_packed_trust(test_root), CITY_RP, clock=lambda: NOW)
    hook(AttestationObject(obj), CDH)
    late = Fido2AttestationHook(_packed_trust(test_root), CITY_RP, clock=lambda: NOW + timedelta(days=4000))
    with pytest.raises(CertificateExpired):
        late(AttestationObject(obj), CDH)


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xa0", id="empty-map"),
        pytest.param(b"\xa3\x63fmt", id="truncated"),
        pytest.param(b"garbage!", id="garbage"),
    ],
)
def test_webauthn_garbage_cbor_is_malformed(blob):
    with pytest.raises(MalformedEvidence):
        verify_webauthn(blob, CDH, rp=None, trust=WebAuthnTrust(), now=NOW)


def test_webauthn_unsupported_format_is_refused(test_root):
    obj, cdh, _stmt = _real("none_yubikey")
    auth = AttestationObject(obj).auth_data
    other = bytes(AttestationObject.create("android-safetynet", auth, {}))
    with pytest.raises(UnsupportedFormat):
        verify_webauthn(other, cdh, rp=None, trust=WebAuthnTrust(), now=NOW)


# --- FIDO MDS3 -----------------------------------------------------------------------------


def _jws(payload: dict[str, Any], signer: TestCa, chain: list[bytes]) -> bytes:
    def enc(b: bytes) -> bytes:
        return base64.urlsafe_b64encode(b).rstrip(b"=")

    header = {"alg": "ES256", "typ": "JWT", "x5c": [base64.b64encode(c).decode() for c in chain]}
    message = enc(json.dumps(header).encode()) + b"." + enc(json.dumps(payload).encode())
    sig = signer.key.sign(message, ec.ECDSA(hashes.SHA256()))
    return message + b"." + enc(sig)


def _mds_payload(aaguid: bytes, root: x509.Certificate, status: str) -> dict[str, Any]:
    from cryptography.hazmat.primitives.serialization import Encoding

    h = aaguid.hex()
    return {
        "legalHeader": "TEST",
        "no": 1,
        "nextUpdate": "2026-02-01",
        "entries": [
            {
                "aaguid": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
                "statusReports": [{"status": status}],
                "timeOfLastStatusChange": "2025-01-01",
                "metadataStatement": {
                    "description": "cityid TEST key",
                    "authenticatorVersion": 1,
                    "schema": 3,
                    "upv": [{"major": 1, "minor": 0}],
                    "attestationTypes": ["basic_full"],
                    "userVerificationDetails": [[{"userVerificationMethod": "presence_internal"}]],
                    "keyProtection": ["hardware", "secure_element"],
                    "matcherProtection": ["on_chip"],
                    "attachmentHint": ["external"],
                    "tcDisplay": [],
                    "attestationRootCertificates": [
                        base64.b64encode(root.public_bytes(Encoding.DER)).decode()
                    ],
                },
            }
        ],
    }


@pytest.fixture(scope="module")
def mds_root() -> TestCa:
    return make_test_root("TEST FIDO MDS root", now=NOW)


def test_webauthn_mds3_blob_gives_anchors_by_aaguid(test_root, mds_root):
    signer = make_intermediate(mds_root, "TEST MDS signer", now=NOW, ca=False)
    blob = _jws(_mds_payload(AAGUID, test_root.certificate, "FIDO_CERTIFIED_L1"), signer, [signer.der])
    trust = load_mds3(blob, mds_root=mds_root.certificate, now=NOW)
    obj, _ = make_packed_attestation(
        root=test_root, rp_id=CITY_RP.rp_id, client_data_hash=CDH, aaguid=AAGUID, now=NOW
    )
    result = verify_webauthn(obj, CDH, rp=CITY_RP, trust=trust, now=NOW)
    assert result.security_level is SecurityLevel.SECURITY_KEY


@pytest.mark.parametrize("status", ["REVOKED", "ATTESTATION_KEY_COMPROMISE"])
def test_webauthn_mds3_revoked_or_key_compromised_authenticator_is_refused_mds3_3_1_4(
    test_root, mds_root, status
):
    # a key compromise report without `certificate`: every new registration of the model
    signer = make_intermediate(mds_root, "TEST MDS signer", now=NOW, ca=False)
    blob = _jws(_mds_payload(AAGUID, test_root.certificate, status), signer, [signer.der])
    trust = load_mds3(blob, mds_root=mds_root.certificate, now=NOW)
    obj, _ = make_packed_attestation(
        root=test_root, rp_id=CITY_RP.rp_id, client_data_hash=CDH, aaguid=AAGUID, now=NOW
    )
    with pytest.raises(AuthenticatorRevoked):
        verify_webauthn(obj, CDH, rp=CITY_RP, trust=trust, now=NOW)


def test_webauthn_mds3_blob_from_foreign_signer_is_refused(test_root, mds_root):
    foreign = make_test_root("not FIDO", now=NOW)
    blob = _jws(_mds_payload(AAGUID, test_root.certificate, "FIDO_CERTIFIED"), foreign, [foreign.der])
    with pytest.raises(UntrustedRoot):
        load_mds3(blob, mds_root=mds_root.certificate, now=NOW)


def test_webauthn_mds3_tampered_payload_is_refused(test_root, mds_root):
    signer = make_intermediate(mds_root, "TEST MDS signer", now=NOW, ca=False)
    blob = _jws(_mds_payload(AAGUID, test_root.certificate, "FIDO_CERTIFIED"), signer, [signer.der])
    head, _, sig = blob.split(b".")
    other = _jws(_mds_payload(b"\x09" * 16, test_root.certificate, "FIDO_CERTIFIED"), signer, [signer.der])
    with pytest.raises(SignatureInvalid):
        load_mds3(head + b"." + other.split(b".")[1] + b"." + sig, mds_root=mds_root.certificate, now=NOW)


def test_webauthn_fido_mds3_spec_example_blob_loads():
    # Source: FIDO MDS3 spec example (fidoalliance.org/specs/mds/fido-metadata-service-v3.0-ps-20210518
    # .html#examples), with the signature re-encoded as ASN.1, from Yubico/python-fido2
    # tests/test_mds3.py (EXAMPLE_BLOB, EXAMPLE_CA).
    blob = (VECTORS / "webauthn" / "fido_mds3_example_blob.jwt").read_bytes()
    root = x509.load_pem_x509_certificate((VECTORS / "webauthn" / "fido_mds3_example_root.pem").read_bytes())
    trust = load_mds3(blob, mds_root=root, now=datetime(2024, 1, 1, tzinfo=UTC))
    assert set(trust.roots_by_aaguid) == {bytes.fromhex("0132d110bf4e4208a403ab4f5f12efe5")}
    with pytest.raises(CertificateExpired):  # the example signer certificate ends 2031-04-17
        load_mds3(blob, mds_root=root, now=datetime(2032, 1, 1, tzinfo=UTC))
