"""RFC 5280 §6.1 policy processing: a validator that demands an explicit policy accepts a leaf
of every profile (openssl -policy_check -explicit_policy, pyhanko-certvalidator with
initial_explicit_policy), also after an instance set up before the fix is upgraded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.policy_decl import PKIXValidationParams
from sqlalchemy import select
from sqlalchemy.orm import Session

import pki
from idp.config import CaConfig
from pki import setup as pki_setup
from pki.certpolicy import POLICY_CA
from pki.models import CaAuthority
from pki.setup import current_ocsp_signer
from pki.tsa import active_tsa
from tests.pki.conftest import BASE_URL
from tests.pki.helpers import openssl, pem, write
from tests.pki.test_issuance import _requests

DER = serialization.Encoding.DER


def _leaves(session: Session, ca: pki.CertificateAuthority) -> dict[str, x509.Certificate]:
    leaves = {which: pki.issue(session, ca, request).certificate for which, request in _requests().items()}
    leaves["ocsp-signer"] = current_ocsp_signer(session, ca).certificate
    tsa = active_tsa(session, ca)
    assert tsa is not None
    leaves["timestamping"] = tsa.certificate
    return leaves


def _leaf_policy(cert: x509.Certificate) -> str:
    value = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    return next(iter(value)).policy_identifier.dotted_string


def _openssl_explicit(tmp: Path, ca: pki.CertificateAuthority, leaf: x509.Certificate) -> tuple[int, str]:
    done = openssl(
        "verify",
        "-x509_strict",
        "-policy_check",
        "-explicit_policy",
        "-policy",
        _leaf_policy(leaf),
        "-CAfile",
        write(tmp / "root.pem", pem(ca.root_certificate)),
        "-untrusted",
        write(tmp / "issuing.pem", pem(ca.certificate)),
        write(tmp / "leaf.pem", pem(leaf)),
    )
    return done.returncode, done.stdout + done.stderr


def _certvalidator_explicit(ca: pki.CertificateAuthority, leaf: x509.Certificate) -> None:
    context = ValidationContext(
        trust_roots=[asn1_x509.Certificate.load(ca.root_certificate.public_bytes(DER))],
        other_certs=[asn1_x509.Certificate.load(ca.certificate.public_bytes(DER))],
        revocation_mode="soft-fail",
        allow_fetching=False,
    )
    params = PKIXValidationParams(
        user_initial_policy_set=frozenset([_leaf_policy(leaf)]), initial_explicit_policy=True
    )
    validator = CertificateValidator(
        asn1_x509.Certificate.load(leaf.public_bytes(DER)), validation_context=context, pkix_params=params
    )
    asyncio.run(validator.async_validate_path())


def test_openssl_explicit_policy_check_accepts_a_leaf_of_every_profile_rfc5280_6_1(
    db_session: Session, ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    for which, leaf in _leaves(db_session, ca).items():
        code, output = _openssl_explicit(tmp_path, ca, leaf)
        assert code == 0, f"{which}: {output}"


def test_pyhanko_certvalidator_with_initial_explicit_policy_accepts_every_profile_rfc5280_6_1(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    for leaf in _leaves(db_session, ca).values():
        _certvalidator_explicit(ca, leaf)  # raises PathValidationError on an empty policy tree


def _downgrade_to_the_old_issuing_certificate(
    session: Session, settings: CaConfig, store: pki.KeyStore
) -> None:
    """What instances set up before the fix have: the issuing CA asserting only <arc>.1."""
    row = session.execute(select(CaAuthority).where(CaAuthority.kind == "issuing")).scalar_one()
    old = pytest.MonkeyPatch()
    old.setattr(pki_setup, "issuing_ca_policies", lambda arc: [pki_setup.policy_oid(arc, POLICY_CA)])
    try:
        root = session.get(CaAuthority, row.parent_id)
        assert root is not None
        current = x509.load_der_x509_certificate(row.der)
        cert = pki_setup._issuing_certificate(
            settings,
            x509.load_der_x509_certificate(root.der),
            store.signer(root.key_ref),
            current.subject,
            store.signer(row.key_ref).public_key(),
            pki_setup.CaUrls(BASE_URL),
            current.not_valid_before_utc,
            current.not_valid_after_utc,
        )
    finally:
        old.undo()
    row.der = cert.public_bytes(DER)
    session.commit()


def test_upgrade_recertifies_the_issuing_ca_with_every_policy_and_the_same_key(
    db_session: Session, ca_config: CaConfig, key_store: pki.KeyStore, tmp_path: Path
) -> None:
    pki.init_ca(db_session, ca_config, key_store, BASE_URL)
    _downgrade_to_the_old_issuing_certificate(db_session, ca_config, key_store)
    old = pki.load_ca(db_session, ca_config, key_store, BASE_URL)
    leaf = pki.issue(db_session, old, _requests()["document-seal"]).certificate
    code, output = _openssl_explicit(tmp_path, old, leaf)
    assert code != 0 and "explicit policy" in output.lower(), output  # the bug, as the issue saw it

    result = pki.init_ca(db_session, ca_config, key_store, BASE_URL)  # `cityid init` after an upgrade

    assert result.recertified_issuing_serial is not None
    new = pki.load_ca(db_session, ca_config, key_store, BASE_URL)
    assert new.id == old.id and new.key_ref == old.key_ref
    assert new.certificate.public_key() == old.certificate.public_key()
    assert new.certificate.subject == old.certificate.subject
    assert new.certificate.serial_number != old.certificate.serial_number
    code, output = _openssl_explicit(tmp_path, new, leaf)  # a leaf issued before the upgrade
    assert code == 0, output
    _certvalidator_explicit(new, leaf)
    assert pki.init_ca(db_session, ca_config, key_store, BASE_URL).recertified_issuing_serial is None
