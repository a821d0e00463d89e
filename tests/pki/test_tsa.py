"""The time-stamp authority (RFC 3161): tokens openssl accepts, refusals as TSA error responses."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from asn1crypto import tsp
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy.orm import Session

import pki
from pki.tsa import TimeStamper, _TimeStampResp, active_tsa, load_time_stamper
from tests.pki.helpers import lint_certificate, openssl, pem, write


@pytest.fixture
def stamper(db_session: Session, ca: pki.CertificateAuthority) -> TimeStamper:
    return load_time_stamper(db_session, ca)


def _query(tmp: Path, data: bytes, *extra: str) -> bytes:
    path = write(tmp / "data.bin", data)
    done = subprocess.run(
        ["openssl", "ts", "-query", "-data", path, "-sha256", "-cert", *extra],
        capture_output=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def _verify(
    tmp: Path, ca: pki.CertificateAuthority, data: bytes, reply: bytes
) -> subprocess.CompletedProcess[str]:
    (tmp / "reply.tsr").write_bytes(reply)
    return openssl(
        "ts",
        "-verify",
        "-data",
        write(tmp / "data.bin", data),
        "-in",
        str(tmp / "reply.tsr"),
        "-CAfile",
        write(tmp / "root.pem", pem(ca.root_certificate)),
        "-untrusted",
        write(tmp / "issuing.pem", pem(ca.certificate)),
    )


def test_openssl_ts_verify_accepts_a_token_rfc3161(
    stamper: TimeStamper, ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    data = b"Bescheid 2026-0001"
    answer = stamper.respond(_query(tmp_path, data))
    assert answer.granted
    done = _verify(tmp_path, ca, data, answer.der)
    assert done.returncode == 0 and "Verification: OK" in done.stdout, done.stdout + done.stderr
    done = _verify(tmp_path, ca, data + b"!", answer.der)
    assert done.returncode != 0  # another document: the imprint does not match


def test_token_honours_the_nonce_states_accuracy_and_our_policy_rfc3161_2_4_2(
    stamper: TimeStamper, ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    query = tsp.TimeStampReq.load(_query(tmp_path, b"x"))  # openssl adds a random 64-bit nonce
    answer = stamper.respond(query.dump())
    info = tsp.TimeStampResp.load(answer.der)["time_stamp_token"]["content"]["encap_content_info"]["content"]
    assert info.parsed["nonce"].native == query["nonce"].native
    assert info.parsed["accuracy"].native["seconds"] == 1
    assert info.parsed["policy"].native == f"{ca.settings.policy_arc}.1.5"
    assert info.parsed["serial_number"].native == answer.serial


def test_serials_are_unique_and_128_bit(stamper: TimeStamper, tmp_path: Path) -> None:
    query = _query(tmp_path, b"x")
    serials = {stamper.respond(query).serial for _ in range(200)}
    assert len(serials) == 200
    assert all(s is not None and s.bit_length() == 128 for s in serials)


def _fail_info(der: bytes) -> tuple[str, set[str]]:
    status = _TimeStampResp.load(der)["status"]
    return status["status"].native, set(status["fail_info"].native or ())


def _request(**fields: object) -> bytes:
    base: dict[str, object] = {
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": b"\x01" * 32},
    }
    base.update(fields)
    return tsp.TimeStampReq(base).dump()


@pytest.mark.parametrize(
    ("request_der", "fail_info"),
    [
        pytest.param(b"", "bad_data_format", id="fail/empty"),
        pytest.param(b"\x30\x03\x02\x01", "bad_data_format", id="fail/truncated-der"),
        pytest.param(b"not a request", "bad_data_format", id="fail/not-der"),
        pytest.param(
            _request(
                message_imprint={"hash_algorithm": {"algorithm": "md5"}, "hashed_message": b"\x01" * 16}
            ),
            "bad_alg",
            id="fail/md5",
        ),
        pytest.param(
            _request(
                message_imprint={"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": b"\x01" * 20}
            ),
            "bad_data_format",
            id="fail/digest-length",
        ),
        pytest.param(_request(req_policy="1.2.3.4"), "unaccepted_policy", id="fail/foreign-policy"),
        pytest.param(
            _request(extensions=[{"extn_id": "1.2.3.4", "critical": False, "extn_value": b"x"}]),
            "unaccepted_extensions",
            id="fail/extension",
        ),
        pytest.param(_request(version=2), "bad_request", id="fail/version-2"),
    ],
)
def test_bad_requests_get_a_rejection_with_fail_info_rfc3161_2_4_2(
    stamper: TimeStamper, request_der: bytes, fail_info: str
) -> None:
    answer = stamper.respond(request_der)
    assert not answer.granted and answer.fail_info == fail_info
    assert _fail_info(answer.der) == ("rejection", {fail_info})


def test_tsa_certificate_has_only_critical_time_stamping_eku_and_passes_pkilint_rfc3161_2_3(
    db_session: Session, ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    tsa = active_tsa(db_session, ca)
    assert tsa is not None
    eku = tsa.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    assert tsa.key_ref.split(":")[0] in ("file", "pkcs11")
    der = tsa.certificate.public_bytes(pki_der())
    assert lint_certificate(der, tmp_path) == ""
    assert pki.status(db_session, tsa.serial).profile == "timestamping"


def pki_der():
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


def test_in_process_stamp_is_a_token_for_the_digest(
    stamper: TimeStamper, ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    data = b"signature value"
    token = stamper.stamp(hashlib.sha256(data).digest())
    reply = tsp.TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token}).dump()
    done = _verify(tmp_path, ca, data, reply)
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_instance_without_a_tsa_gets_one_on_init(
    db_session: Session, ca_config: pki.ca.CaSettings, key_store: pki.KeyStore, ca: pki.CertificateAuthority
) -> None:
    from sqlalchemy import update

    from pki.models import CaAuthority

    db_session.execute(update(CaAuthority).where(CaAuthority.kind == "tsa").values(active=False))
    db_session.commit()
    assert active_tsa(db_session, ca) is None  # as an instance set up before the TSA existed
    result = pki.init_ca(db_session, ca_config, key_store, "https://ca.test.invalid")
    tsa = active_tsa(db_session, ca)
    assert tsa is not None and tsa.serial == result.tsa_serial


def test_tokens_are_canonical_der_as_asn1crypto_re_encodes_them(stamper: TimeStamper, tmp_path: Path) -> None:
    # pki/tsa_asn1.py encodes with cryptography's declarative ASN.1; asn1crypto, decoding every
    # field and encoding it again from scratch, must produce the very same bytes (DER is unique)
    for extra in ((), ("-no_nonce",)):
        answer = stamper.respond(_query(tmp_path, b"doc", *extra))
        parsed = tsp.TimeStampResp.load(answer.der)
        assert parsed.dump(force=True) == answer.der
        info = parsed["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed
        assert (info["nonce"].native is None) == bool(extra)
        attrs = parsed["time_stamp_token"]["content"]["signer_infos"][0]["signed_attrs"]
        assert [a["type"].native for a in attrs] == [
            "content_type",
            "message_digest",
            "signing_certificate_v2",
        ]
