"""Refusals: every bad request fails with its own typed error, and nothing is issued."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import pki
from db.audit import AuditEvent
from pki import errors
from pki.models import CaCertificate
from tests.pki.helpers import DEVICE_ID, make_csr, name


def _tampered_csr() -> bytes:
    der = bytearray(make_csr(subject=name(CN="x")))
    der[-5] ^= 0x01  # flip a bit inside the signature value
    return bytes(der)


def _swapped_key_csr() -> bytes:
    """A CSR whose body names one key but which is signed by another: no proof of possession."""
    signer = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    good = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(signer, hashes.SHA256())
    der = good.public_bytes(serialization.Encoding.DER)
    old = signer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    new = other.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der.replace(old, new)


def _ed25519_csr() -> bytes:
    key = ed25519.Ed25519PrivateKey.generate()
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, None)
    return csr.public_bytes(serialization.Encoding.DER)


def _san(*names: x509.GeneralName) -> tuple[x509.ExtensionType, bool]:
    return (x509.SubjectAlternativeName(list(names)), False)


VECTORS = Path(__file__).parent / "vectors"
URN = x509.UniformResourceIdentifier(f"urn:cityid:device:{DEVICE_ID}")

# (case id, request factory, expected error)  — step-ca style "fail/<what>/<why>" names
CASES = [
    (
        "fail/csr/garbage-der",
        lambda: pki.IssueRequest(b"\x30\x03\x02\x01\x00", "device-auth", device_id=DEVICE_ID),
        errors.MalformedCsr,
    ),
    (
        "fail/csr/garbage-pem",
        lambda: pki.IssueRequest(
            b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64!\n-----END CERTIFICATE REQUEST-----\n",
            "device-auth",
            device_id=DEVICE_ID,
        ),
        errors.MalformedCsr,
    ),
    (
        "fail/csr/empty",
        lambda: pki.IssueRequest(b"", "device-auth", device_id=DEVICE_ID),
        errors.MalformedCsr,
    ),
    (
        "fail/csr/bad-signature",
        lambda: pki.IssueRequest(_tampered_csr(), "document-seal"),
        errors.BadCsrSignature,
    ),
    (
        "fail/csr/signed-by-another-key",
        lambda: pki.IssueRequest(_swapped_key_csr(), "device-auth", device_id=DEVICE_ID),
        errors.BadCsrSignature,
    ),
    (
        "fail/csr/sha1-signature",
        lambda: pki.IssueRequest(
            (VECTORS / "csr_sha1_signature.der").read_bytes(), "device-auth", device_id=DEVICE_ID
        ),
        errors.WeakCsrSignatureAlgorithm,
    ),
    (
        "fail/key/rsa-for-device",
        lambda: pki.IssueRequest(
            make_csr(rsa.generate_private_key(65537, 2048)), "device-auth", device_id=DEVICE_ID
        ),
        errors.KeyTypeNotAllowed,
    ),
    (
        "fail/key/ed25519",
        lambda: pki.IssueRequest(_ed25519_csr(), "device-auth", device_id=DEVICE_ID),
        errors.KeyTypeNotAllowed,
    ),
    (
        "fail/key/p384-for-device",
        lambda: pki.IssueRequest(
            make_csr(ec.generate_private_key(ec.SECP384R1())), "device-auth", device_id=DEVICE_ID
        ),
        errors.KeySizeNotAllowed,
    ),
    (
        "fail/key/rsa-1024-for-tls",
        lambda: pki.IssueRequest(
            make_csr(
                rsa.generate_private_key(65537, 1024),
                extensions=[_san(x509.DNSName("a.musterstadt.de"))],
                algorithm=hashes.SHA256(),
            ),
            "tls-server",
        ),
        errors.KeySizeNotAllowed,
    ),
    (
        "fail/extension/basic-constraints-ca",
        lambda: pki.IssueRequest(
            make_csr(extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)]),
            "device-auth",
            device_id=DEVICE_ID,
        ),
        errors.ExtensionNotAllowed,
    ),
    (
        "fail/extension/eku-server-auth-on-device",
        lambda: pki.IssueRequest(
            make_csr(extensions=[(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)]),
            "device-auth",
            device_id=DEVICE_ID,
        ),
        errors.ExtensionNotAllowed,
    ),
    (
        "fail/extension/key-cert-sign",
        lambda: pki.IssueRequest(
            make_csr(
                extensions=[
                    (x509.KeyUsage(True, False, False, False, False, True, False, False, False), True)
                ]
            ),
            "device-auth",
            device_id=DEVICE_ID,
        ),
        errors.ExtensionNotAllowed,
    ),
    (
        "fail/san/dns-on-device",
        lambda: pki.IssueRequest(
            make_csr(extensions=[_san(URN, x509.DNSName("evil.example"))]), "device-auth", device_id=DEVICE_ID
        ),
        errors.SanNotAllowed,
    ),
    (
        "fail/san/other-device-urn",
        lambda: pki.IssueRequest(
            make_csr(extensions=[_san(x509.UniformResourceIdentifier("urn:cityid:device:someoneelse1"))]),
            "device-auth",
            device_id=DEVICE_ID,
        ),
        errors.SanNotAllowed,
    ),
    (
        "fail/san/email-on-tls",
        lambda: pki.IssueRequest(
            make_csr(extensions=[_san(x509.DNSName("a.musterstadt.de"), x509.RFC822Name("a@b.de"))]),
            "tls-server",
        ),
        errors.SanNotAllowed,
    ),
    (
        "fail/san/tls-without-dns",
        lambda: pki.IssueRequest(make_csr(subject=name(CN="a.musterstadt.de")), "tls-server"),
        errors.SanNotAllowed,
    ),
    (
        "fail/san/ip-address-as-dns",
        lambda: pki.IssueRequest(make_csr(extensions=[_san(x509.DNSName("a..b"))]), "tls-server"),
        errors.SanNotAllowed,
    ),
    (
        "fail/san/on-document-seal",
        lambda: pki.IssueRequest(
            make_csr(
                subject=name(CN="Siegel", O="Stadt"), extensions=[_san(x509.DNSName("a.musterstadt.de"))]
            ),
            "document-seal",
        ),
        errors.ExtensionNotAllowed,
    ),
    (
        "fail/subject/personal-data-on-device",
        lambda: pki.IssueRequest(
            make_csr(subject=name(CN="Erika Mustermann")), "device-auth", device_id=DEVICE_ID
        ),
        errors.SubjectNotAllowed,
    ),
    (
        "fail/subject/email-attribute-on-seal",
        lambda: pki.IssueRequest(make_csr(subject=name(CN="Siegel", O="Stadt", E="a@b.de")), "document-seal"),
        errors.SubjectNotAllowed,
    ),
    (
        "fail/subject/seal-without-organisation",
        lambda: pki.IssueRequest(make_csr(subject=name(CN="Siegel")), "document-seal"),
        errors.SubjectNotAllowed,
    ),
    (
        "fail/subject/tls-cn-not-in-san",
        lambda: pki.IssueRequest(
            make_csr(
                subject=name(CN="b.musterstadt.de"), extensions=[_san(x509.DNSName("a.musterstadt.de"))]
            ),
            "tls-server",
        ),
        errors.SubjectNotAllowed,
    ),
    (
        "fail/request/device-without-id",
        lambda: pki.IssueRequest(make_csr(), "device-auth"),
        errors.BadRequest,
    ),
    (
        "fail/request/device-id-with-bad-characters",
        lambda: pki.IssueRequest(make_csr(), "device-auth", device_id="a b/c?d=e&f"),
        errors.BadRequest,
    ),
    (
        "fail/request/unknown-profile",
        lambda: pki.IssueRequest(make_csr(), "code-signing"),
        errors.UnknownProfile,
    ),
    (
        "fail/request/validity-beyond-profile",
        lambda: pki.IssueRequest(
            make_csr(),
            "device-auth",
            device_id=DEVICE_ID,
            validity=__import__("datetime").timedelta(days=4000),
        ),
        errors.ValidityNotAllowed,
    ),
]


def _issued_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(CaCertificate)) or 0


@pytest.mark.parametrize(("case", "make", "error"), CASES, ids=[c[0] for c in CASES])
def test_bad_requests_fail_with_a_typed_error_and_nothing_is_recorded_as_issued(
    case: str, make, error: type[errors.PkiError], db_session: Session, ca: pki.CertificateAuthority
) -> None:
    request = make()
    before = _issued_count(db_session)
    with pytest.raises(error) as caught:
        pki.issue(db_session, ca, request)
    assert type(caught.value) is error, f"{case}: {type(caught.value).__name__}"
    assert _issued_count(db_session) == before
    last = db_session.execute(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).scalar_one()
    assert (last.action, last.outcome, last.reason) == ("pki.certificate.issue", "denied", error.code)
    assert json.loads(last.details)["profile"] == request.profile


def test_a_refused_request_refuses_the_whole_batch(db_session: Session, ca: pki.CertificateAuthority) -> None:
    before = _issued_count(db_session)
    good = pki.IssueRequest(make_csr(), "device-auth", device_id=DEVICE_ID)
    bad = pki.IssueRequest(_tampered_csr(), "device-auth", device_id=DEVICE_ID)
    with pytest.raises(errors.BadCsrSignature):
        pki.issue_batch(db_session, ca, [good, good, bad])
    assert _issued_count(db_session) == before


def test_every_error_class_has_its_own_code() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.PkiError)]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))
