"""Issuance: what the CA puts in certificates, checked by openssl and pkilint."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import pki
from idp.config import CaConfig
from pki import crl
from pki.cert_der import Assembler
from pki.issuance import _plan
from pki.models import CaAuthority, CaCertificate
from pki.profiles import ID_KP_DOCUMENT_SIGNING
from pki.setup import current_ocsp_signer
from tests.pki.conftest import BASE_URL, PASSPHRASE
from tests.pki.helpers import (
    DEVICE_ID,
    lint_certificate,
    lint_crl_der,
    make_csr,
    name,
    openssl_verify,
    pem,
)


def _requests() -> dict[str, pki.IssueRequest]:
    return {
        "device-auth": pki.IssueRequest(make_csr(), "device-auth", device_id=DEVICE_ID),
        "tls-server": pki.IssueRequest(
            make_csr(
                subject=name(CN="termine.musterstadt.de"),
                extensions=[
                    (
                        x509.SubjectAlternativeName(
                            [
                                x509.DNSName("termine.musterstadt.de"),
                                x509.DNSName("www.termine.musterstadt.de"),
                            ]
                        ),
                        False,
                    )
                ],
            ),
            "tls-server",
        ),
        "tls-server-rsa": pki.IssueRequest(
            make_csr(
                rsa.generate_private_key(65537, 2048),
                extensions=[(x509.SubjectAlternativeName([x509.DNSName("rsa.musterstadt.de")]), False)],
            ),
            "tls-server",
        ),
        "document-seal": pki.IssueRequest(
            make_csr(
                ec.generate_private_key(ec.SECP384R1()),
                subject=name(C="DE", O="Stadt Musterstadt", CN="Bürgeramt Siegel"),
            ),
            "document-seal",
        ),
    }


@pytest.mark.parametrize("which", list(_requests()))
def test_every_profile_passes_openssl_x509_strict_with_crl_check_and_pkilint(
    which: str, db_session: Session, ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    result = pki.issue(db_session, ca, _requests()[which])
    cert = result.certificate
    shard = crl.current(db_session, ca, str(pki.status(db_session, result.serial).shard))
    full = crl.current(db_session, ca, crl.FULL)
    for crl_der in (shard, full):
        done = openssl_verify(
            tmp_path,
            pem(ca.root_certificate),
            pem(ca.certificate),
            pem(cert),
            [pem(x509.load_der_x509_crl(crl_der))],
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert lint_certificate(result.certificate_der, tmp_path) == ""
    assert lint_crl_der(shard, tmp_path) == ""


def test_ca_certificates_and_ocsp_signer_pass_pkilint(
    db_session: Session, ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    assert lint_certificate(ca.root_certificate.public_bytes(serialization.Encoding.DER), tmp_path) == ""
    assert lint_certificate(ca.certificate.public_bytes(serialization.Encoding.DER), tmp_path) == ""
    signer = pki.list_certificates(db_session, profile="ocsp-signer")[0]
    assert signer.certificate_der is not None
    assert lint_certificate(signer.certificate_der, tmp_path) == ""
    assert lint_crl_der(crl.current(db_session, ca, crl.ROOT), tmp_path, kind="ARL") == ""


def test_serial_is_positive_and_at_most_20_octets_rfc5280_4_1_2_2(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    results = pki.issue_batch(
        db_session, ca, [pki.IssueRequest(make_csr(), "device-auth", device_id=DEVICE_ID)] * 50
    )
    serials = [r.certificate.serial_number for r in results]
    assert len(set(serials)) == 50
    for s in serials:
        assert 0 < s < 2**159  # positive; 20 octets in DER with the sign bit clear
        assert len(s.to_bytes((s.bit_length() + 8) // 8, "big")) <= 20
    # >= 128 random bits: over 50 serials, at least one has one of the top bits set
    assert max(serials).bit_length() > 150


def test_device_certificate_carries_no_personal_data_only_the_device_urn(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    cert = pki.issue(
        db_session, ca, pki.IssueRequest(make_csr(), "device-auth", device_id=DEVICE_ID)
    ).certificate
    assert len(cert.subject) == 0
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # RFC 5280 §4.2.1.6: empty subject → SAN critical
    assert list(san.value) == [x509.UniformResourceIdentifier(f"urn:cityid:device:{DEVICE_ID}")]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_encipherment
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=90, minutes=1)


def test_device_certificate_may_sign_documents_content_commitment_and_signing_ekus(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    """docs/pki.md: the device key signs PDFs, so its certificate says so (RFC 5280 §4.2.1.3
    contentCommitment; §4.2.1.12 emailProtection, which NSS-based PDF validators ask of a
    signer, and id-kp-documentSigning, RFC 9336); nothing that would let it encrypt or certify."""
    cert = pki.issue(
        db_session, ca, pki.IssueRequest(make_csr(), "device-auth", device_id=DEVICE_ID)
    ).certificate
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.content_commitment
    assert not (ku.key_encipherment or ku.key_agreement or ku.key_cert_sign or ku.crl_sign)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.EMAIL_PROTECTION,
        x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36"),
    ]


def test_aia_and_crl_dp_name_the_urls_the_ca_serves_rfc5280_4_2_2_1_and_4_2_1_13(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    result = pki.issue(db_session, ca, pki.IssueRequest(make_csr(), "device-auth", device_id=DEVICE_ID))
    cert = result.certificate
    aia = {
        (d.access_method, d.access_location.value)
        for d in cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    }
    assert aia == {
        (AuthorityInformationAccessOID.OCSP, f"{BASE_URL}/pki/ocsp"),
        (AuthorityInformationAccessOID.CA_ISSUERS, f"{BASE_URL}/pki/issuing.crt"),
    }
    shard = pki.status(db_session, result.serial).shard
    dps = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for n in dps[0].full_name or []] == [f"{BASE_URL}/pki/crl/{shard}.crl"]
    assert shard == cert.serial_number % ca.crl_shards


def test_every_certificate_is_recorded_before_it_is_returned(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    seen: list[tuple[str, str]] = []

    def after_sign(serial: str) -> None:  # runs after the signature, before the DER is stored
        with Session(db_session.get_bind()) as other:
            row = other.get(CaCertificate, serial)
            seen.append((serial, row.status if row else "missing"))

    result = pki.issue(
        db_session,
        ca,
        pki.IssueRequest(make_csr(), "device-auth", device_id=DEVICE_ID),
        hooks=pki.IssueHooks(after_sign=after_sign),
    )
    assert seen == [(result.serial, "pending")]
    st = pki.status(db_session, result.serial)
    assert st.status == "issued" and st.certificate_der == result.certificate_der
    assert pki.status_by_fingerprint(db_session, result.fingerprint_sha256).serial == result.serial
    assert pki.status_of_certificate(db_session, result.certificate_der).is_good()


def test_issued_status_can_commit_with_the_callers_rows_and_a_rollback_leaves_it_pending(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    result = pki.issue(
        db_session, ca, pki.IssueRequest(make_csr(), "device-auth", device_id=DEVICE_ID), commit=False
    )
    db_session.rollback()  # e.g. the device row could not be stored: the request fails
    row = db_session.get(CaCertificate, result.serial)
    assert row is not None and row.status == "pending" and row.der is None  # still known to the CA
    kept = pki.issue(
        db_session, ca, pki.IssueRequest(make_csr(), "device-auth", device_id=DEVICE_ID), commit=False
    )
    db_session.commit()  # the caller's commit
    assert pki.status(db_session, kept.serial).status == "issued"


def test_batch_issuance_records_every_certificate(db_session: Session, ca: pki.CertificateAuthority) -> None:
    before = db_session.scalar(select(func.count()).select_from(CaCertificate))
    reqs = [pki.IssueRequest(make_csr(), "device-auth", device_id=f"device{i:04d}") for i in range(40)]
    results = pki.issue_batch(db_session, ca, reqs)
    after = db_session.scalar(select(func.count()).select_from(CaCertificate))
    assert after == before + 40
    assert {r.subject for r in results} == {f"urn:cityid:device:device{i:04d}" for i in range(40)}
    assert all(pki.status(db_session, r.serial).status == "issued" for r in results)


def test_document_seal_has_content_commitment_rfc9336_document_signing_and_email_protection_for_nss(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    cert = pki.issue(db_session, ca, _requests()["document-seal"]).certificate
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.content_commitment
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ID_KP_DOCUMENT_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION]


def test_ca_init_is_idempotent(
    db_session: Session, ca: pki.CertificateAuthority, key_store: pki.KeyStore
) -> None:
    again = pki.init_ca(db_session, ca.settings, key_store, BASE_URL)
    assert not again.created
    assert again.issuing_serial == format(ca.certificate.serial_number, "040x")


def test_ocsp_signer_profile_is_not_open_to_requests(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    with pytest.raises(pki.errors.UnknownProfile):
        pki.issue(db_session, ca, pki.IssueRequest(make_csr(subject=name(CN="x")), "ocsp-signer"))


@pytest.mark.parametrize("which", list(_requests()))
def test_assembled_certificates_are_byte_identical_to_cryptographys_own(
    which: str, ca: pki.CertificateAuthority
) -> None:
    # pki/cert_der.py frames what cryptography encodes; any difference is a bug there
    plan = _plan(ca, _requests()[which], dt.datetime.now(dt.UTC), internal=False)
    after_2050 = dt.datetime(2051, 3, 4, 5, 6, 7, tzinfo=dt.UTC)  # GeneralizedTime, RFC 5280 §4.1.2.5
    variants = [plan, dataclasses.replace(plan, not_after=after_2050)]
    variants += [dataclasses.replace(plan, serial=s) for s in (1, 127, 128, 255, 256, 2**152 - 1, 2**159 - 1)]
    variants.append(dataclasses.replace(plan, extensions=[]))  # RFC 5280 §4.1: then no [3] at all
    assembler = Assembler(ca.certificate, ca.signer())
    for p in variants:
        reference = p.builder(ca).sign(ca.signer(), hashes.SHA256())
        tbs = p.tbs(assembler)
        assert tbs == reference.tbs_certificate_bytes
        cert = x509.load_der_x509_certificate(assembler.certificate(tbs))
        cert.verify_directly_issued_by(ca.certificate)


def test_every_profile_issued_in_one_batch_passes_openssl_and_pkilint(
    db_session: Session, ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    # the first certificate of each profile comes from cryptography, the others are assembled
    requests = [r for r in _requests().values() for _ in range(3)]
    results = pki.issue_batch(db_session, ca, requests)
    full = pem(x509.load_der_x509_crl(crl.current(db_session, ca, crl.FULL)))
    for result in results:
        cert = result.certificate
        cert.verify_directly_issued_by(ca.certificate)
        assert cert.public_bytes(serialization.Encoding.DER) == result.certificate_der  # canonical DER
        done = openssl_verify(tmp_path, pem(ca.root_certificate), pem(ca.certificate), pem(cert), [full])
        assert done.returncode == 0, done.stdout + done.stderr
    for result in results[1::3]:
        assert lint_certificate(result.certificate_der, tmp_path) == ""


CITY_ARC = "1.3.6.1.4.1.99999.7"  # stands for an arc under the city's own IANA PEN


def _policies(cert: x509.Certificate) -> list[str]:
    value = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    return [p.policy_identifier.dotted_string for p in value]


def test_certificate_policies_sit_under_the_configured_arc_rfc5280_4_2_1_4(
    db_session: Session, tmp_path: Path
) -> None:
    settings = CaConfig(crl_shards=2, policy_arc=CITY_ARC)
    store = pki.open_key_store(settings, tmp_path, PASSPHRASE)
    pki.init_ca(db_session, settings, store, BASE_URL)
    ca = pki.load_ca(db_session, settings, store, BASE_URL)
    assert _policies(ca.certificate) == [
        f"{CITY_ARC}.{p}" for p in ("1", "1.1", "1.2", "1.3", "1.4", "1.5", "1.6")
    ]
    expected = {"device-auth": "1.1", "tls-server": "1.2", "tls-server-rsa": "1.2", "document-seal": "1.3"}
    for which, request in _requests().items():
        cert = pki.issue(db_session, ca, request).certificate
        assert _policies(cert) == [f"{CITY_ARC}.{expected[which]}"], which
    assert _policies(current_ocsp_signer(db_session, ca).certificate) == [f"{CITY_ARC}.1.4"]


@pytest.mark.parametrize("arc", ["", "1.3.6.1.4.1.99999.", "3.1", "1.40.5", "2.25." + "9" * 39, "1.3.6.x"])
def test_a_malformed_policy_arc_refuses_ca_init_before_any_key_is_made(
    db_session: Session, tmp_path: Path, arc: str
) -> None:
    settings = CaConfig(crl_shards=2, policy_arc=arc)
    store = pki.open_key_store(settings, tmp_path, PASSPHRASE)
    with pytest.raises(pki.errors.BadRequest, match="policy_arc"):
        pki.init_ca(db_session, settings, store, BASE_URL)
    keys = tmp_path / "ca-keys"
    assert not keys.exists() or not any(keys.iterdir())
    assert db_session.scalar(select(func.count()).select_from(CaAuthority)) == 0
