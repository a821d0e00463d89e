"""A device removed after signing: its signature still validates as made before the revocation
(the signature time-stamp proves when, the DSS holds the OCSP answer of then); a signature
attempted after the removal is refused and changes nothing."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
import requests
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from pyhanko.pdf_utils.reader import PdfFileReader

from smartcard.softtoken import DeviceApiError
from tests.idp.conftest import csrf
from tests.signing.citizen_helpers import as_json, make_pdf, pdfsig, request_rows, root_pem, signer_setup
from tests.signing.test_citizen_sign import pyhanko_lt_status
from tests.smartcard.conftest import World, idp_factory, world

__all__ = ["idp_factory", "world"]


def _timestamp_time(pdf: bytes) -> object:
    (sig,) = PdfFileReader(io.BytesIO(pdf)).embedded_signatures
    signer_info = sig.signer_info
    (token,) = signer_info["unsigned_attrs"]
    assert token["type"].native == "signature_time_stamp_token"  # ETSI EN 319 122-1 §5.3 (B-T)
    content: cms.ContentInfo = token["values"][0]
    return content["content"]["encap_content_info"]["content"].parsed["gen_time"].native


def _ocsp_now(world: World, cert: x509.Certificate, issuer: x509.Certificate) -> ocsp.OCSPResponse:
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256()).build()
    r = requests.post(
        f"{world.idp.url}/pki/ocsp",
        data=req.public_bytes(serialization.Encoding.DER),
        headers={"Content-Type": "application/ocsp-request"},
        timeout=10,
    )
    return ocsp.load_der_ocsp_response(r.content)


def _remove_device(world: World, browser: object, device_id: str) -> None:
    mine = browser.get(f"{world.idp.url}/account/devices")  # type: ignore[attr-defined]
    removed = browser.post(  # type: ignore[attr-defined]
        f"{world.idp.url}/account/devices/{device_id}/remove", {"csrf_token": csrf(mine.text)}
    )
    assert removed.status_code in (302, 303), removed.text[:300]


def test_signature_made_before_removal_still_validates_by_its_time_stamp(
    world: World, tmp_path: Path
) -> None:
    service, browser, device = signer_setup(world, "erika@example.org")
    created = as_json(service.post_pdf(make_pdf()))
    (item,) = device.signature_requests()
    assert device.sign_document(item) == {"status": "signed"}
    signed = service.fetch(created["id"]).content
    signed_at = _timestamp_time(signed)
    time.sleep(1.1)  # RFC 5280 revocation times are whole seconds: removed in a later one

    _remove_device(world, browser, device.token.state["device_id"])
    chain = x509.load_pem_x509_certificates(device.token.state["chain"].encode())
    now = _ocsp_now(world, chain[0], chain[1])
    assert now.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert now.revocation_time_utc is not None and now.revocation_time_utc > signed_at  # type: ignore[operator]

    # validated from the file alone at the time-stamp's time: good then (the embedded OCSP)
    status = pyhanko_lt_status(signed, root_pem(world), at=signed_at)  # type: ignore[arg-type]
    assert status.bottom_line, status.pretty_print_details()
    out = tmp_path / "signed-before-removal.pdf"
    out.write_bytes(signed)
    report = pdfsig(out, root_pem(world), tmp_path)
    assert "Signature is Valid" in report, report


def test_signature_attempted_after_removal_is_refused_and_changes_nothing(world: World) -> None:
    service, browser, device = signer_setup(world, "erika@example.org")
    created = as_json(service.post_pdf(make_pdf()))
    (item,) = device.signature_requests()
    approval = device.signature_approval(item)  # signed on the phone, sent after the removal
    _remove_device(world, browser, device.token.state["device_id"])
    before = request_rows(world)

    with pytest.raises(DeviceApiError) as refused:
        device.send_signature_approval(approval)
    assert refused.value.status == 401 and refused.value.error == "certificate_revoked"
    with pytest.raises(DeviceApiError) as listing:
        device.signature_requests()
    assert listing.value.error == "certificate_revoked"
    assert request_rows(world) == before and before[0]["state"] == "pending"
    assert world.audit("signature.approve", "denied")

    # the service's grant came from the removed device's PKI-2FA: it ended with the device
    again = service.post_pdf(make_pdf("Neuer Antrag"))
    assert again.status_code == 401 and as_json(again)["error"] == "invalid_token"
    assert service.fetch(created["id"]).status_code == 401
