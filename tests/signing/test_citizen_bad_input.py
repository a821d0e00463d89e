"""Bad input to citizen signatures: each a clear 4xx ``{"error", "error_description"}``, audited,
and no state change (no request made, a pending one stays pending and can still be signed)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import re

import pytest
import requests
from pyhanko.pdf_utils.reader import PdfFileReader

from smartcard.softtoken import DeviceApiError
from tests.signing.citizen_helpers import (
    Service,
    add_service,
    as_json,
    login_service,
    make_pdf,
    request_count,
    request_rows,
    signer_setup,
)
from tests.smartcard.conftest import World, enrolled, idp_factory, world

__all__ = ["idp_factory", "world"]


def _encrypted_pdf() -> bytes:
    return make_pdf(password="user-secret")  # ISO 32000-1 §7.6: standard security handler


def _broken_xref_pdf() -> bytes:
    """``startxref`` points into the middle of the file: no xref section there."""
    pdf = make_pdf()
    return re.sub(rb"startxref\s+\d+", b"startxref\n17", pdf)


BAD_DOCUMENTS = {
    "not-a-pdf": (b"GIF89a this is no PDF", "application/pdf", 400, "not_a_pdf"),
    "empty": (b"", "application/pdf", 400, "empty_document"),
    "encrypted": (None, "application/pdf", 400, "encrypted_pdf"),
    "broken-xref": (None, "application/pdf", 400, "broken_pdf"),
    "wrong-content-type": (b"%PDF-1.7", "text/plain", 400, "not_a_pdf"),
    "over-20-MiB": (b"%PDF-1.7\n" + b"0" * (20 * 1024 * 1024), "application/pdf", 413, "document_too_large"),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCUMENTS))
def test_bad_document_is_refused_4xx_audited_no_request_made(world: World, case: str) -> None:
    service, _browser, _device = signer_setup(world, "erika@example.org")
    data, ctype, status, code = BAD_DOCUMENTS[case]
    if case == "encrypted":
        data = _encrypted_pdf()
    if case == "broken-xref":
        data = _broken_xref_pdf()
    assert data is not None
    r = service.post_pdf(data, content_type=ctype)
    assert r.status_code == status, r.text[:300]
    body = as_json(r)
    assert body["error"] == code and body["error_description"]
    assert request_count(world) == 0
    assert world.audit("signature.request", "denied")


def test_encrypted_and_broken_fixtures_are_what_they_claim() -> None:
    """The two fixtures above must be readable as what they are, or the test proves nothing."""
    assert PdfFileReader(io.BytesIO(_encrypted_pdf())).encrypted
    with pytest.raises(AssertionError):  # pyHanko 0.38 on an xref offset that points nowhere
        PdfFileReader(io.BytesIO(_broken_xref_pdf()), strict=True)


def test_token_without_scope_sign_is_refused_403_insufficient_scope(world: World) -> None:
    browser, device = enrolled(world, "erika@example.org")
    client_id, secret = world.idp.add_client(
        name="Other", redirect_uris=["http://127.0.0.1:9/bauamt"], scope="openid", min_level=None
    )
    assert secret
    other = login_service(Service(world, client_id, secret), browser, None, dpop=False)
    r = other.post_pdf(make_pdf())
    assert r.status_code == 403 and as_json(r)["error"] == "insufficient_scope"
    assert request_count(world) == 0
    assert any(e.reason == "insufficient_scope" for e in world.audit("signature.request", "denied"))
    del device


def test_request_without_token_is_refused_401(world: World) -> None:
    r = requests.post(f"{world.idp.url}/api/signatures", data=make_pdf(), timeout=10)
    assert r.status_code == 401 and as_json(r)["error"] == "invalid_token"


def test_device_only_at_low_cannot_be_asked_nor_sign_403(world: World) -> None:
    """The citizen's only device is renewed with a new key and no attestation: a software key,
    at most low (policies.assess_device). The service's grant (made at substantial) lives on,
    but no request is made for that citizen, and a pending one cannot be signed by it."""
    service, _browser, device = signer_setup(world, "erika@example.org")
    pending = service.post_pdf(make_pdf())
    assert pending.status_code == 201
    holder = world.idp.app.extensions["cityid.smartcard"]  # renewal window open now
    holder["settings"] = dataclasses.replace(holder["settings"], renew_before=dt.timedelta(days=3650))
    renewed = device.renew(new_key=True, attestation=None)
    assert renewed["max_level"] == "low"
    r = service.post_pdf(make_pdf("Zweiter Antrag"))
    assert r.status_code == 403 and as_json(r)["error"] == "no_signing_device", r.text
    assert request_count(world) == 1
    (item,) = device.signature_requests()
    before = request_rows(world)
    with pytest.raises(DeviceApiError) as refused:
        device.sign_document(item)
    assert refused.value.status == 403 and refused.value.error == "insufficient_device_level"
    after = request_rows(world)
    assert [r["state"] for r in after] == ["pending"] and after[0]["document"] == before[0]["document"]


def test_answer_with_mismatching_document_hash_is_refused_and_changes_nothing(world: World) -> None:
    service, _browser, device = signer_setup(world, "erika@example.org")
    created = as_json(service.post_pdf(make_pdf()))
    (item,) = device.signature_requests()
    before = request_rows(world)
    forged = device.signature_approval(item, document_sha256="00" * 32)
    with pytest.raises(DeviceApiError) as refused:
        device.send_signature_approval(forged)
    assert refused.value.status == 400 and refused.value.error == "document_mismatch"
    assert request_rows(world) == before  # still pending, still prepared for this device
    assert world.audit("signature.approve", "denied")
    # other digest than the prepared signed attributes: refused as well
    other = device.signature_approval(item, to_be_signed="A" * 43)
    with pytest.raises(DeviceApiError) as refused2:
        device.send_signature_approval(other)
    assert refused2.value.error == "document_mismatch"
    assert request_rows(world) == before
    # the honest answer still works
    assert device.sign_document(item) == {"status": "signed"}
    assert service.fetch(created["id"]).status_code == 200


def test_replayed_approval_is_refused_and_changes_nothing(world: World) -> None:
    service, _browser, device = signer_setup(world, "erika@example.org")
    created = as_json(service.post_pdf(make_pdf()))
    (item,) = device.signature_requests()
    approval = device.signature_approval(item)
    assert device.send_signature_approval(approval) == {"status": "signed"}
    after_first = request_rows(world)
    # the same proof again: its jti was used (RFC 9449 §11.1 as for DPoP)
    with pytest.raises(DeviceApiError) as replay:
        device.send_signature_approval(approval)
    assert replay.value.status == 401 and replay.value.error == "invalid_device_proof"
    # a fresh proof for the answered request: single use of the request
    with pytest.raises(DeviceApiError) as again:
        device.sign_document(item)
    assert again.value.status == 409 and again.value.error == "request_answered"
    assert request_rows(world) == after_first
    assert service.fetch(created["id"]).status_code == 200


def test_signature_by_another_key_than_the_certificate_is_refused(world: World) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from smartcard.softtoken import b64url, b64url_decode

    service, _browser, device = signer_setup(world, "erika@example.org")
    service.post_pdf(make_pdf())
    (item,) = device.signature_requests()
    before = request_rows(world)
    stranger = ec.generate_private_key(ec.SECP256R1())
    bad = b64url(stranger.sign(b64url_decode(item["signed_attributes"]), ec.ECDSA(hashes.SHA256())))
    with pytest.raises(DeviceApiError) as refused:
        device.send_signature_approval(device.signature_approval(item, signature=bad))
    assert refused.value.status == 400 and refused.value.error == "invalid_signature"
    assert request_rows(world) == before


def test_another_citizens_device_cannot_see_or_sign_the_request(world: World) -> None:
    service, _browser, _device = signer_setup(world, "erika@example.org")
    created = as_json(service.post_pdf(make_pdf()))
    _b2, mallory = enrolled(world, "mallory@example.org", name="mallory")
    assert mallory.signature_requests() == []
    fake = {
        "id": created["id"],
        "document_sha256": created["document"]["sha256"],
        "title": created["document"]["title"],
        "pages": 1,
        "service_name": "Bauamt Musterstadt",
        "to_be_signed": "A" * 43,
        "signed_attributes": "",
    }
    import hashlib

    from smartcard.softtoken import b64url

    fake["signed_attributes"] = b64url(b"\x31\x00")
    fake["to_be_signed"] = b64url(hashlib.sha256(b"\x31\x00").digest())
    before = request_rows(world)
    with pytest.raises(DeviceApiError) as refused:
        mallory.sign_document(fake)
    assert refused.value.status == 404 and refused.value.error == "not_found"
    assert request_rows(world) == before


def test_other_service_cannot_fetch_the_signed_document(world: World) -> None:
    service, browser, device = signer_setup(world, "erika@example.org")
    created = as_json(service.post_pdf(make_pdf()))
    (item,) = device.signature_requests()
    assert device.sign_document(item) == {"status": "signed"}
    other = login_service(add_service(world), browser, None)
    r = other.fetch(created["id"])
    assert r.status_code == 404 and as_json(r)["error"] == "not_found"
    assert service.fetch(created["id"]).status_code == 200


def test_more_than_ten_waiting_documents_are_refused_429(world: World) -> None:
    service, _browser, _device = signer_setup(world, "erika@example.org")
    pdf = make_pdf()
    for _ in range(10):
        assert service.post_pdf(pdf).status_code == 201
    r = service.post_pdf(pdf)
    assert r.status_code == 429 and as_json(r)["error"] == "too_many_requests"
    assert request_count(world) == 10


def test_documents_are_purged_by_the_background_duty_after_15_minutes(world: World) -> None:
    import datetime as _dt

    from db import transaction, utcnow
    from idp.serve import purge_expired

    service, _browser, _device = signer_setup(world, "erika@example.org")
    assert service.post_pdf(make_pdf()).status_code == 201
    with transaction(world.idp.sessions()) as s:
        purge_expired(s, utcnow() + _dt.timedelta(minutes=14))
    assert request_count(world) == 1
    with transaction(world.idp.sessions()) as s:
        purge_expired(s, utcnow() + _dt.timedelta(minutes=15, seconds=1))
    assert request_count(world) == 0


def test_token_from_a_login_below_substantial_is_refused_rfc9470(world: World) -> None:
    """An instance that dropped ``sign`` from ``scope_levels`` hands out sign tokens at low: the
    signing API itself still demands a grant at substantial (RFC 9470 §3)."""
    rt = world.idp.app.extensions["cityid"]
    rt.config = dataclasses.replace(rt.config, scope_levels={})
    browser, _device = enrolled(world, "erika@example.org")
    service = login_service(add_service(world), browser, None)  # password only: low
    r = service.post_pdf(make_pdf())
    assert r.status_code == 401 and as_json(r)["error"] == "insufficient_user_authentication"
    assert "acr_values" in r.headers["WWW-Authenticate"]
    assert request_count(world) == 0
    assert any(
        e.reason == "insufficient_user_authentication" for e in world.audit("signature.request", "denied")
    )


def test_request_for_a_citizen_whose_device_was_removed_is_refused_403(world: World) -> None:
    """The service's token outlives the device when it came from another factor (an eID login,
    a passkey): here the device is revoked without ending bindings. No request is made."""
    import pki
    from db import utcnow
    from smartcard.revoke import revoke_device

    service, _browser, device = signer_setup(world, "erika@example.org")
    cfg = world.idp.config
    with world.idp.sessions()() as s:
        ca = pki.load_ca(s, cfg.ca, pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase), cfg.issuer)
        revoke_device(s, ca, device.token.state["device_id"], actor="test", reason="lost", now=utcnow())
    r = service.post_pdf(make_pdf())
    assert r.status_code == 403 and as_json(r)["error"] == "no_signing_device", r.text
    assert request_count(world) == 0
