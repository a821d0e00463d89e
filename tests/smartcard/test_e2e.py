"""End to end through HTTP: register, enrol a soft token, reach *substantial* with PKI-2FA,
use a DPoP-bound token, remove the device, and see OCSP and the next PKI-2FA refuse it."""

from __future__ import annotations

import json

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from joserfc import jwt
from joserfc.jwk import KeySet

from smartcard.softtoken import DeviceApiError, DpopSigner
from tests.smartcard.conftest import (
    RP_REDIRECT,
    World,
    app_token,
    citizen,
    continue_device,
    device_page_id,
    query,
    rp_authorize,
)


def _redeem(world: World, callback: str, verifier: str, dpop: DpopSigner) -> dict[str, str]:
    url = f"{world.idp.url}/token"
    data = {
        "grant_type": "authorization_code",
        "code": query(callback)["code"],
        "redirect_uri": RP_REDIRECT,
        "code_verifier": verifier,
    }
    for _ in range(2):
        r = requests.post(
            url,
            data=data,
            auth=(world.rp_id, world.rp_secret),
            headers={"DPoP": dpop.proof("POST", url)},
            timeout=10,
        )
        if r.status_code == 400 and r.json().get("error") == "use_dpop_nonce":
            dpop.nonce = r.headers["DPoP-Nonce"]
            continue
        break
    assert r.status_code == 200, r.text
    tok: dict[str, str] = r.json()
    return tok


def _ocsp_status(world: World, cert_pem: str, chain_pem: str) -> ocsp.OCSPCertStatus:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    issuer = x509.load_pem_x509_certificates(chain_pem.encode())[1]
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
    r = requests.post(
        f"{world.idp.url}/pki/ocsp",
        data=req.public_bytes(serialization.Encoding.DER),
        headers={"Content-Type": "application/ocsp-request"},
        timeout=10,
    )
    assert r.status_code == 200
    return ocsp.load_der_ocsp_response(r.content).certificate_status


def test_register_enrol_substantial_login_dpop_resource_then_removal_refuses(world: World) -> None:
    idp = world.idp
    address = "erika@example.org"
    browser = citizen(world, address)
    at, app_dpop = app_token(world, browser, address)  # login at low, app token (DPoP)
    token, device = world.device("Pixel")
    enrolled = device.enrol(at, app_dpop, name="Pixel", attestation=world.profile("tee"))
    assert enrolled["max_level"] == "substantial" and enrolled["security_level"] == "tee"
    assert world.audit("smartcard.enroll", "success")

    # the relying service asks for substantial with an essential acr claim
    claims_req = json.dumps(
        {"id_token": {"acr": {"essential": True, "value": "http://eidas.europa.eu/LoA/substantial"}}}
    )
    page, verifier = rp_authorize(world, browser, claims=claims_req)
    assert page.status_code == 200 and "/login/device" in page.url, (page.status_code, page.url)
    public_id, code = device_page_id(page)
    assert "Parking permits" in page.text
    # before the device answers, "check again" says not yet
    again = continue_device(browser, page)
    assert again.status_code == 200 and public_id in again.text
    status = browser.get(f"{idp.url}/login/device/status?id={public_id}").json()
    assert status == {"status": "pending"}

    pending = device.pending()
    assert [p["binding_code"] for p in pending] == [code]
    assert pending[0]["service_name"] == "Parking permits"
    assert device.answer(pending[0]) == {"status": "approved"}
    assert browser.get(f"{idp.url}/login/device/status?id={public_id}").json() == {"status": "approved"}

    done = continue_device(browser, page)
    if done.status_code == 200 and 'name="decision"' in done.text:
        done = browser.consent(done)
    assert done.status_code in (302, 303) and done.headers["Location"].startswith(RP_REDIRECT), done.text[
        :500
    ]
    rp_dpop = DpopSigner()
    tok = _redeem(world, done.headers["Location"], verifier, rp_dpop)
    jwks = KeySet.import_key_set(requests.get(f"{idp.url}/jwks.json", timeout=10).json())
    id_token = jwt.decode(tok["id_token"], jwks).claims
    assert id_token["acr"] == "http://eidas.europa.eu/LoA/substantial"
    assert "hwk" in id_token["amr"] and "mfa" in id_token["amr"]
    access = jwt.decode(tok["access_token"], jwks).claims
    assert access["cnf"] == {"jkt": rp_dpop.jkt}  # RFC 9449 §6.1
    assert world.audit("smartcard.pki2fa", "success")

    # the resource: with a proof by the bound key it works, without or with another key not
    res = f"{idp.url}/api/demo/resource"
    ok = requests.get(
        res,
        headers={
            "Authorization": f"DPoP {tok['access_token']}",
            "DPoP": rp_dpop.proof("GET", res, tok["access_token"]),
        },
        timeout=10,
    )
    assert ok.status_code == 200, ok.text
    no_proof = requests.get(res, headers={"Authorization": f"DPoP {tok['access_token']}"}, timeout=10)
    assert no_proof.status_code == 401
    other = DpopSigner()
    other.nonce = rp_dpop.nonce
    wrong = requests.get(
        res,
        headers={
            "Authorization": f"DPoP {tok['access_token']}",
            "DPoP": other.proof("GET", res, tok["access_token"]),
        },
        timeout=10,
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_dpop_proof"

    # OCSP says good, then the citizen removes the device on "My devices"
    cert_pem, chain_pem = token.state["certificate"], token.state["chain"]
    assert _ocsp_status(world, cert_pem, chain_pem) == ocsp.OCSPCertStatus.GOOD
    from tests.idp.conftest import csrf

    mine = browser.get(f"{idp.url}/account/devices")
    assert mine.status_code == 200 and "Pixel" in mine.text
    removed = browser.post(
        f"{idp.url}/account/devices/{enrolled['device_id']}/remove", {"csrf_token": csrf(mine.text)}
    )
    assert removed.status_code in (302, 303), removed.text[:300]
    assert _ocsp_status(world, cert_pem, chain_pem) == ocsp.OCSPCertStatus.REVOKED
    assert world.audit("smartcard.device_remove", "success")

    # the app's own token died with the device; the next PKI-2FA is refused
    r = requests.post(
        f"{idp.url}/api/smartcard/challenge",
        headers={
            "Authorization": f"DPoP {at}",
            "DPoP": app_dpop.proof("POST", f"{idp.url}/api/smartcard/challenge", at),
        },
        json={},
        timeout=10,
    )
    assert r.status_code == 401
    try:
        device.pending()
        raise AssertionError("a removed device must be refused")
    except DeviceApiError as exc:
        assert exc.status == 401 and exc.error == "certificate_revoked"
    # the account has no device left: substantial can no longer be reached
    page, _ = rp_authorize(world, browser, claims=claims_req)
    assert page.status_code in (302, 303)
    assert query(page.headers["Location"]).get("error") == "unmet_authentication_requirements", page.headers[
        "Location"
    ]
    assert world.audit("smartcard.pending", "denied")
