"""Validation over HTTP: ``POST /api/signatures/validate`` (no login, size-limited, JSON from
``signing.validate``) and the citizen page "Check a signed document" (CSRF, plain language)."""

from __future__ import annotations

import re
import time

import requests

from tests.idp.conftest import Browser, csrf
from tests.signing.citizen_helpers import as_json, make_pdf, signer_setup
from tests.signing.test_citizen_revocation import _remove_device
from tests.smartcard.conftest import World, idp_factory, world

__all__ = ["idp_factory", "world"]


def _signed_pdf(world: World) -> tuple[bytes, object, object]:
    service, browser, device = signer_setup(world, "erika@example.org")
    created = as_json(service.post_pdf(make_pdf("Antrag")))
    (item,) = device.signature_requests()
    assert device.sign_document(item) == {"status": "signed"}
    got = service.fetch(created["id"])
    assert got.status_code == 200
    return got.content, browser, device


def _validate(world: World, data: bytes, content_type: str = "application/pdf") -> requests.Response:
    return requests.post(
        f"{world.idp.url}/api/signatures/validate",
        data=data,
        headers={"Content-Type": content_type},
        timeout=60,
    )


def test_validate_api_reports_citizen_signature_then_valid_now_false_after_removal(world: World) -> None:
    signed, browser, device = _signed_pdf(world)
    r = _validate(world, signed)
    assert r.status_code == 200, r.text
    body = as_json(r)
    assert body["valid"] is True
    (sig,) = body["signatures"]
    device_id = device.token.state["device_id"]  # type: ignore[attr-defined]
    assert sig["kind"] == "signature" and sig["signer"] == f"urn:cityid:device:{device_id}"
    assert sig["level"] == "B-LT" and sig["timestamp"] is not None
    assert sig["intact"] and not sig["changed_after"] and sig["valid_then"] and sig["valid_now"] is True
    assert any(e.reason == "valid" for e in world.audit("signature.validate", "info"))

    time.sleep(1.1)  # revocation times are whole seconds: after the time-stamp's second
    _remove_device(world, browser, device_id)
    after = as_json(_validate(world, signed))
    (sig2,) = after["signatures"]
    # made before the revocation (the time-stamp proves when): still valid; the certificate not
    assert after["valid"] is True and sig2["valid_then"] is True and sig2["valid_now"] is False


def test_validate_api_byte_changed_in_signed_range_is_reported(world: World) -> None:
    signed, _b, _d = _signed_pdf(world)
    at = signed.index(b"/MediaBox") + 12  # inside the original document, inside /ByteRange
    tampered = signed[:at] + (b"9" if signed[at : at + 1] != b"9" else b"8") + signed[at + 1 :]
    body = as_json(_validate(world, tampered))
    assert body["valid"] is False
    (sig,) = body["signatures"]
    assert sig["intact"] is False


BAD = {
    "not-a-pdf": (b"this is plain text", "application/pdf", 400, "not_a_pdf"),
    "empty": (b"", "application/pdf", 400, "empty_document"),
    "wrong-type": (b"%PDF-1.7 ...", "text/plain", 400, "not_a_pdf"),
    "over-limit": (b"%PDF-1.7\n" + b"0" * (20 * 1024 * 1024), "application/pdf", 413, "document_too_large"),
}


def test_validate_api_bad_uploads_are_4xx_json_and_audited(world: World) -> None:
    for case, (data, ctype, status, code) in BAD.items():
        r = _validate(world, data, ctype)
        assert r.status_code == status, (case, r.text[:200])
        body = as_json(r)
        assert body["error"] == code and body["error_description"], case
    denied = world.audit("signature.validate", "denied")
    assert len(denied) == len(BAD)


def test_unsigned_pdf_is_not_valid_but_not_an_error(world: World) -> None:
    body = as_json(_validate(world, make_pdf()))
    assert body == {**body, "valid": False, "signatures": []}


def test_check_page_in_plain_german_with_csrf(world: World) -> None:
    signed, _b, device = _signed_pdf(world)
    b = Browser(world.idp)
    page = b.get(f"{world.idp.url}/signatures/check", headers={"Accept-Language": "de"})
    assert page.status_code == 200 and "Signiertes Dokument prüfen" in page.text
    assert 'type="file"' in page.text and 'enctype="multipart/form-data"' in page.text
    url = f"{world.idp.url}/signatures/check"
    # without the CSRF token: refused, nothing checked
    no_csrf = b.http.post(url, files={"document": ("a.pdf", signed, "application/pdf")}, timeout=60)
    assert no_csrf.status_code == 400
    token = csrf(page.text)
    ok = b.http.post(
        url,
        data={"csrf_token": token},
        files={"document": ("antrag.pdf", signed, "application/pdf")},
        headers={"Accept-Language": "de"},
        timeout=60,
    )
    assert ok.status_code == 200, ok.text[:500]
    device_id = device.token.state["device_id"]  # type: ignore[attr-defined]
    assert f"Signiert von urn:cityid:device:{device_id}" in ok.text
    assert "Alle Signaturen und Siegel in diesem Dokument sind gültig." in ok.text
    assert "Nein: Das Dokument ist seit dem Signieren unverändert." in ok.text
    assert "bestätigt durch einen vertrauenswürdigen Zeitstempel" in ok.text
    assert re.search(r"PAdES B-LT", ok.text)
    # not a PDF: a friendly page, 400
    bad = b.http.post(
        url,
        data={"csrf_token": csrf(ok.text)},
        files={"document": ("x.pdf", b"hello", "application/pdf")},
        headers={"Accept-Language": "de"},
        timeout=60,
    )
    assert bad.status_code == 400 and "Diese Datei ist kein PDF-Dokument." in bad.text
    en = b.http.post(
        url,
        data={"csrf_token": csrf(bad.text)},
        files={"document": ("antrag.pdf", signed, "application/pdf")},
        headers={"Accept-Language": "en"},
        cookies={"lang": "en"},
        timeout=60,
    )
    assert "No: the document is unchanged since it was signed." in en.text
