"""The city seal: sealed PDFs validate with pyHanko and with Poppler's pdfsig (city root trusted);
a changed byte is reported by both; B-LT validates offline with revocation checked."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from pyhanko.pdf_utils.reader import PdfFileReader
from sqlalchemy import select

import pki
import signing
from db.audit import AuditEvent
from signing import Level, Visible
from signing.seal import SealNotValid, seal_documents
from signing.validate import validate
from tests.signing.conftest import City, pdfsig
from tests.signing.pdfs import make_pdf


def _seal(city: City, pdf: bytes, level: Level = Level.B_LT, **kwargs: object) -> bytes:
    return seal_documents(city.session, city.ca, [pdf], city.context, level=level, **kwargs)[0].pdf  # type: ignore[arg-type]


@pytest.mark.parametrize("level", list(Level))
def test_a_sealed_pdf_validates_with_pyhanko_and_pdfsig_trusting_the_city_root(
    city: City, tmp_path: Path, level: Level
) -> None:
    sealed = _seal(city, make_pdf(2), level, reason="Bescheid")
    result = validate(sealed, [city.ca.root_certificate], online=False)
    (report,) = result.signatures
    assert report.intact and report.trusted and not report.changed_after
    assert report.kind == "seal" and report.signer == "Stadt Musterstadt Bürgeramt"
    assert report.level == level.value
    assert (report.timestamp is not None) == (level != Level.B_B)  # B-T and B-LT carry our time-stamp
    out = pdfsig(tmp_path, city.ca, sealed)
    assert "Signature Validation: Signature is Valid." in out, out
    assert "Certificate Validation: Certificate is Trusted." in out, out
    assert "ETSI.CAdES.detached" in out  # PAdES (ETSI EN 319 142-1 §5.1)


def test_b_lt_validates_with_revocation_checking_while_cityid_is_not_running(city: City) -> None:
    # online=False: no responder, no CRL distribution point is asked; only what the file embeds
    sealed = _seal(city, make_pdf(1), Level.B_LT)
    (report,) = validate(sealed, [city.ca.root_certificate], online=False).signatures
    assert report.level == "B-LT" and report.valid_then and report.problems == ()
    # the same signature without the DSS (B-T) cannot be checked for revocation offline
    (bare,) = validate(
        _seal(city, make_pdf(1), Level.B_T), [city.ca.root_certificate], online=False
    ).signatures
    assert bare.intact and not bare.valid_then
    assert any("revocation not checked" in p for p in bare.problems)


def test_b_lt_embeds_the_chain_ocsp_responses_and_crls_in_the_dss_etsi_en_319_142_1_5_4(city: City) -> None:
    sealed = _seal(city, make_pdf(1), Level.B_LT)
    dss = PdfFileReader(io.BytesIO(sealed)).root["/DSS"]
    assert len(dss["/Certs"]) >= 4  # seal, TSA, issuing CA, root
    assert len(dss["/OCSPs"]) == 2  # the seal's and the TSA's certificate
    assert len(dss["/CRLs"]) >= 2  # the root's ARL and the shard CRL


def _flip_signed_byte(pdf: bytes) -> bytes:
    at = pdf.index(b"(Seite 1") + 7  # inside the first page's content stream: in the signed range
    return pdf[:at] + b"7" + pdf[at + 1 :]


@pytest.mark.parametrize("level", [Level.B_T, Level.B_LT])
def test_a_byte_changed_in_the_signed_range_is_reported_by_pyhanko_and_pdfsig(
    city: City, tmp_path: Path, level: Level
) -> None:
    tampered = _flip_signed_byte(_seal(city, make_pdf(1), level))
    result = validate(tampered, [city.ca.root_certificate], online=False)
    assert not result.valid and not result.signatures[0].intact
    out = pdfsig(tmp_path, city.ca, tampered)
    assert "Signature Validation: Digest Mismatch." in out, out


def test_each_seal_is_audited_with_the_document_hash_not_the_document(city: City) -> None:
    pdf = make_pdf(1, title="Bescheid über Hundesteuer 2027")
    result = seal_documents(city.session, city.ca, [pdf], city.context, level=Level.B_T)[0]
    entries = city.session.scalars(select(AuditEvent).where(AuditEvent.action == "signing.seal")).all()
    (entry,) = entries
    details = json.loads(entry.details)
    assert entry.outcome == "success"
    assert details["document_sha256"] == result.document_sha256
    assert details["level"] == "B-T" and details["seal_serial"] == city.seal.serial
    assert "Hundesteuer" not in entry.details + entry.reason + entry.subject


def test_a_revoked_seal_refuses_to_seal(city: City) -> None:
    pki.revoke(city.session, city.ca, city.seal.serial, reason="keyCompromise")
    with pytest.raises(SealNotValid):
        seal_documents(city.session, city.ca, [make_pdf(1)], city.context, level=Level.B_B)


def test_a_visible_seal_sits_on_the_page_asked_for(city: City) -> None:
    sealed = _seal(city, make_pdf(3), Level.B_B, visible=Visible(2, 50, 60, 200, 80))
    reader = PdfFileReader(io.BytesIO(sealed))
    page = reader.root["/Pages"]["/Kids"][1]
    widgets = [a.get_object() for a in page["/Annots"]]
    assert [[int(v) for v in w["/Rect"]] for w in widgets] == [[50, 60, 250, 140]]
    assert validate(sealed, [city.ca.root_certificate], online=False).signatures[0].intact


def test_a_broken_time_stamp_does_not_vouch_for_the_signing_time(city: City) -> None:
    # the certificate is judged at the time-stamp's time; a token whose signature does not
    # verify must not set that time (else any time could be claimed)
    sealed = _seal(city, make_pdf(1), Level.B_LT)
    signature = PdfFileReader(io.BytesIO(sealed)).embedded_signatures[0]
    (token,) = [
        a["values"][0]
        for a in signature.signer_info["unsigned_attrs"]
        if a["type"].native == "signature_time_stamp_token"
    ]
    token_signature = token["content"]["signer_infos"][0]["signature"].native.hex().encode()
    at = sealed.lower().index(token_signature) + 20  # in /Contents: outside the signed byte range
    flipped = b"0" if sealed[at : at + 1] != b"0" else b"1"
    tampered = sealed[:at] + flipped + sealed[at + 1 :]
    (report,) = validate(tampered, [city.ca.root_certificate], online=False).signatures
    assert report.intact  # the document's bytes are untouched
    assert report.timestamp is None and not report.valid_then and not report.ok
    assert "the signature time-stamp does not validate" in report.problems


def test_validation_refuses_more_signatures_than_the_limit(
    city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signing.validate as validation

    pdf = make_pdf(1)
    for _ in range(3):
        pdf = _seal(city, pdf, Level.B_B)
    assert len(validate(pdf, [city.ca.root_certificate], online=False).signatures) == 3
    monkeypatch.setattr(validation, "MAX_SIGNATURES", 2)
    with pytest.raises(signing.TooManySignatures):
        validate(pdf, [city.ca.root_certificate], online=False)
