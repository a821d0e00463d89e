"""CRLs: numbering, sharding with issuingDistributionPoint, one-pass encoding, pkilint."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.orm import Session

import pki
from pki import crl
from pki.crl_der import encode_entries, splice_and_sign
from tests.pki.helpers import DEVICE_ID, lint_crl_der, make_csr, name


def test_crl_numbers_increase_monotonically_per_scope_rfc5280_5_2_3(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    numbers = []
    for _ in range(3):
        der = crl.generate(db_session, ca, "1")
        numbers.append(
            x509.load_der_x509_crl(der).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        )
    db_session.commit()
    assert numbers == sorted(numbers) and len(set(numbers)) == 3


def test_shard_crls_carry_a_critical_issuing_distribution_point_naming_their_url_rfc5280_5_2_5(
    db_session: Session, ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    for shard in range(ca.crl_shards):
        der = crl.current(db_session, ca, str(shard))
        idp = x509.load_der_x509_crl(der).extensions.get_extension_for_class(x509.IssuingDistributionPoint)
        assert idp.critical
        assert [n.value for n in idp.value.full_name or []] == [ca.urls.shard_crl(shard)]
        assert lint_crl_der(der, tmp_path) == ""
    full = x509.load_der_x509_crl(crl.current(db_session, ca, crl.FULL))
    with pytest.raises(x509.ExtensionNotFound):
        full.extensions.get_extension_for_class(x509.IssuingDistributionPoint)


def test_crl_has_next_update_from_config_and_a_valid_signature_rfc5280_5_1_2_5(
    db_session: Session, ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    issued = pki.issue(db_session, ca, pki.IssueRequest(make_csr(), "device-auth", device_id=DEVICE_ID))
    pki.revoke(db_session, ca, issued.serial, "cessationOfOperation")
    der = crl.current(db_session, ca, crl.FULL)
    c = x509.load_der_x509_crl(der)
    assert c.next_update_utc is not None and c.last_update_utc is not None
    assert c.next_update_utc - c.last_update_utc == dt.timedelta(hours=ca.settings.crl_next_update_hours)
    assert c.is_signature_valid(ca.certificate.public_key())
    assert lint_crl_der(der, tmp_path) == ""


def _entries(n: int) -> list[tuple[str, dt.datetime | str, int | None]]:
    base = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
    reasons = [None, 1, 3, 4, 5, 6, 9, 0]
    ints = [
        (secrets.randbits(159) | (i % 2), base + dt.timedelta(seconds=i % 700), reasons[i % len(reasons)])
        for i in range(n)
    ] + [(1, dt.datetime(2051, 1, 1, tzinfo=dt.UTC), 1), (2**159 - 1, base, None), (255, base, 2)]
    as_text = [(format(s, "040x"), w, r) for s, w, r in ints]
    # SQLite hands the revocation date over as UTC text
    sqlite_style = [(format(s, "040x"), w.strftime("%Y-%m-%d %H:%M:%S.000000"), r) for s, w, r in ints[:20]]
    return as_text + sqlite_style


@pytest.mark.parametrize("n", [0, 300])
def test_spliced_revoked_list_is_byte_identical_to_cryptographys_encoding(n: int) -> None:
    # n = 0: RFC 5280 §5.1.2.6, revokedCertificates absent rather than an empty SEQUENCE
    key = ec.generate_private_key(ec.SECP256R1())
    entries = _entries(n) if n else []
    now = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
    builder = x509.CertificateRevocationListBuilder(
        name(CN="CA"),
        now,
        now + dt.timedelta(days=1),
        [x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(7))],
        [],
    )
    template = builder.sign(key, hashes.SHA256())
    fast = x509.load_der_x509_crl(splice_and_sign(template, encode_entries(entries), key))
    revoked = [crl._library_entry(*e) for e in entries]
    reference = x509.CertificateRevocationListBuilder(
        name(CN="CA"),
        now,
        now + dt.timedelta(days=1),
        [x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(7))],
        revoked,
    ).sign(key, hashes.SHA256())
    assert fast.tbs_certlist_bytes == reference.tbs_certlist_bytes
    assert fast.is_signature_valid(key.public_key())
    assert len(fast) == len(entries)


def test_large_crls_use_the_one_pass_path_and_stay_valid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ca: pki.CertificateAuthority
) -> None:
    monkeypatch.setattr(crl, "LIBRARY_LIMIT", 10)
    now = dt.datetime.now(dt.UTC)
    der = crl.build_crl(
        issuer=ca.certificate,
        signer=ca.signer(),
        number=42,
        this_update=now,
        next_update=now + dt.timedelta(hours=1),
        entries=_entries(50),
        distribution_point=ca.urls.shard_crl(0),
    )
    c = x509.load_der_x509_crl(der)
    assert len(c) == 73 and c.is_signature_valid(ca.certificate.public_key())
    assert lint_crl_der(der, tmp_path) == ""
    assert c.public_bytes(Encoding.DER) == der


def test_a_spliced_crl_from_the_database_lists_what_the_library_lists_rfc5280_5_1_2_6(
    monkeypatch: pytest.MonkeyPatch, db_session: Session, ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    # rows streamed from the driver in chunks, past the library limit: the same entries, dates
    # and reasons as cryptography's own path over the same rows
    issued = pki.issue_batch(
        db_session,
        ca,
        [pki.IssueRequest(make_csr(), "device-auth", device_id=f"{DEVICE_ID}{i}") for i in range(30)],
    )
    reasons = ["keyCompromise", "superseded", "unspecified", "certificateHold", "cessationOfOperation"]
    for i, cert in enumerate(issued[:25]):
        pki.revoke(db_session, ca, cert.serial, reasons[i % len(reasons)])
    library = x509.load_der_x509_crl(crl.generate(db_session, ca, crl.FULL))
    monkeypatch.setattr(crl, "LIBRARY_LIMIT", 10)
    spliced_der = crl.generate(db_session, ca, crl.FULL)
    db_session.commit()
    spliced = x509.load_der_x509_crl(spliced_der)

    def listed(c: x509.CertificateRevocationList) -> dict[int, tuple[dt.datetime, list]]:
        return {r.serial_number: (r.revocation_date_utc, list(r.extensions)) for r in c}

    assert len(spliced) == 25 and listed(spliced) == listed(library)
    assert spliced.is_signature_valid(ca.certificate.public_key())
    assert lint_crl_der(spliced_der, tmp_path) == ""
