"""The wallet credential issuer's key: profile ``credential-issuer``, certified by the city CA,
in the CA's key store (file and SoftHSM2), pkilint-clean, only the CA issues it."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.orm import Session

import pki
from pki.credential_issuer import active_credential_issuer, credential_issuer_signer, init_credential_issuer
from pki.errors import PkiError
from tests.pki.helpers import lint_certificate


def test_credential_issuer_key_is_certified_by_the_city_ca_and_lint_clean(
    db_session: Session, ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    key = init_credential_issuer(db_session, ca, "CN=Musterstadt credential issuer,O=Stadt Musterstadt,C=DE")
    db_session.commit()
    assert active_credential_issuer(db_session, ca) == key
    cert = key.certificate
    assert cert.issuer == ca.certificate.subject
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign and not ku.content_commitment
    policies = [
        p.policy_identifier.dotted_string
        for p in cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    ]
    assert policies == [f"{ca.settings.policy_arc}.1.6"]
    signer = credential_issuer_signer(ca, key)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert signer.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)
    assert lint_certificate(cert.public_bytes(serialization.Encoding.DER), tmp_path) == ""
    assert len(key.x5c()) == 2  # leaf and issuing CA (the root is the verifier's trust anchor)


def test_only_the_ca_issues_the_credential_issuer_profile(
    db_session: Session, ca: pki.CertificateAuthority
) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=mallory"))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(PkiError):
        pki.issue(
            db_session,
            ca,
            pki.IssueRequest(csr=csr.public_bytes(serialization.Encoding.DER), profile="credential-issuer"),
        )
