"""prepare/finish with a key that never comes near the signing code (as a citizen's device):
the state survives serialisation, a wrong signature is refused, the result validates."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

import pki
import signing
from signing.validate import validate
from tests.pki.helpers import make_csr, name
from tests.signing.conftest import City
from tests.signing.pdfs import make_pdf


@pytest.fixture
def holder(city: City) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A key held elsewhere and its certificate (document-seal profile, for a signer in tests)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(key, subject=name(C="DE", O="Stadt Musterstadt", CN="Sachbearbeitung 4711"))
    cert = pki.issue(city.session, city.ca, pki.IssueRequest(csr, "document-seal")).certificate
    return key, cert


def test_the_external_key_signs_the_signed_attributes_and_finish_makes_a_valid_b_lt(
    city: City, holder: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]
) -> None:
    key, cert = holder
    pdf = make_pdf(4, title="Antrag")
    prepared = signing.prepare(pdf, cert, [city.ca.certificate, city.ca.root_certificate])
    assert prepared.document == signing.inspect(pdf)  # what the device shows: title, pages, hash
    assert prepared.document.page_count == 4 and prepared.document.title == "Antrag"
    state = signing.Prepared.from_bytes(prepared.to_bytes())  # kept between requests
    assert state == prepared
    # a device that signs a prehashed digest produces the same kind of signature
    signature = key.sign(state.to_be_signed_sha256, ec.ECDSA(Prehashed(hashes.SHA256())))
    signed = signing.finish(state, signature, city.context)
    (report,) = validate(signed, [city.ca.root_certificate], online=False).signatures
    assert report.ok and report.level == "B-LT" and report.signer == "Sachbearbeitung 4711"


def test_a_signature_over_other_data_is_refused_before_anything_is_embedded(
    city: City, holder: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]
) -> None:
    key, cert = holder
    prepared = signing.prepare(make_pdf(1), cert, [city.ca.certificate, city.ca.root_certificate])
    other = signing.prepare(make_pdf(2), cert, [city.ca.certificate, city.ca.root_certificate])
    wrong = key.sign(other.to_be_signed, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(signing.SignatureMismatch):
        signing.finish(prepared, wrong, city.context)
    stranger = ec.generate_private_key(ec.SECP256R1()).sign(prepared.to_be_signed, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(signing.SignatureMismatch):
        signing.finish(prepared, stranger, city.context)


def test_damaged_state_is_a_typed_error(city: City) -> None:
    with pytest.raises(signing.BadState):
        signing.Prepared.from_bytes(b'{"v": 1}')
    with pytest.raises(signing.BadState):
        signing.Prepared.from_bytes(b"\x00not json")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param(b"", signing.EmptyDocument, id="fail/empty"),
        pytest.param(b"%PDF-1.7\n" + b" " * 64, signing.BrokenPdf, id="fail/header-only"),
        pytest.param(b"PK\x03\x04 a zip file", signing.NotAPdf, id="fail/zip"),
    ],
)
def test_prepare_refuses_bad_documents_with_typed_errors(
    city: City,
    holder: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    data: bytes,
    error: type[Exception],
) -> None:
    _key, cert = holder
    with pytest.raises(error):
        signing.prepare(data, cert, [city.ca.certificate])


def test_the_size_limit_is_checked_first(
    city: City, holder: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]
) -> None:
    _key, cert = holder
    pdf = make_pdf(1)
    with pytest.raises(signing.DocumentTooLarge):
        signing.prepare(pdf, cert, [city.ca.certificate], max_size=len(pdf) - 1)


def test_b_t_without_a_reachable_tsa_is_a_typed_error(
    city: City, holder: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]
) -> None:
    from pyhanko.sign.timestamps.requests_client import HTTPTimeStamper

    key, cert = holder
    prepared = signing.prepare(make_pdf(1), cert, [city.ca.certificate], level=signing.Level.B_T)
    signature = key.sign(prepared.to_be_signed, ec.ECDSA(hashes.SHA256()))
    for context in (
        signing.SigningContext(None, None),
        signing.SigningContext(HTTPTimeStamper("http://127.0.0.1:9/pki/tsa", timeout=2), None),
    ):
        with pytest.raises(signing.TimeStampFailed):
            signing.finish(prepared, signature, context)
