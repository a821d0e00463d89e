"""Hostile device input through HTTP: each refusal is a clear protocol error, changes no
state, and leaves an audit record naming why."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import time
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import pki
from db import transaction
from idp.models import Grant
from smartcard.evidence import make_intermediate, make_test_root
from smartcard.models import Challenge, Device
from smartcard.softtoken import DeviceClient, SoftToken, b64url, b64url_decode, es256_jws
from smartcard.wire import evidence_to_json
from tests.idp.conftest import Browser
from tests.smartcard.conftest import (
    World,
    app_token,
    citizen,
    continue_device,
    device_page_id,
    enrolled,
    rp_authorize,
)

ESSENTIAL = json.dumps(
    {"id_token": {"acr": {"essential": True, "value": "http://eidas.europa.eu/LoA/substantial"}}}
)


def _login_waiting(world: World, browser: Any) -> str:
    page, _ = rp_authorize(world, browser, claims=ESSENTIAL)
    assert "/login/device" in page.url, page.url
    return device_page_id(page)[0]


def _approve(world: World, token: SoftToken, item: dict[str, Any], **over: Any) -> requests.Response:
    url = f"{world.idp.url}/api/smartcard/approve"
    claims = {
        "challenge": item["challenge"],
        "binding_code": item["binding_code"],
        "service_name": item["service_name"],
        "amount": item.get("amount"),
        "decision": "approve",
        **over,
    }
    return requests.post(url, json={"approval": token.proof("POST", url, **claims)}, timeout=10)


def _denied(world: World, action: str, code: str) -> None:
    rows = world.audit(action, "denied")
    assert any(r.reason == code for r in rows), [(r.reason, r.details) for r in rows]


@pytest.fixture
def alice(world: World) -> tuple[Any, DeviceClient]:
    return enrolled(world, "alice@example.org")


def test_replayed_pki2fa_answer_is_refused_single_use(world: World, alice: Any) -> None:
    browser, device = alice
    _login_waiting(world, browser)
    item = device.pending()[0]
    assert _approve(world, device.token, item).status_code == 200
    again = _approve(world, device.token, item)
    assert again.status_code == 400 and again.json()["error"] == "invalid_challenge"
    _denied(world, "smartcard.approve", "invalid_challenge")


def test_replayed_enrolment_challenge_is_refused(world: World) -> None:
    browser = citizen(world, "carl@example.org")
    at, dpop = app_token(world, browser, "carl@example.org")
    token, client = world.device()
    url = f"{world.idp.url}/api/smartcard/challenge"
    ch = client._with_dpop("POST", "/api/smartcard/challenge", at, dpop, json={})
    body = {
        "challenge": ch["challenge"],
        "csr": b64url(token.csr()),
        "attestation": None,  # a software key (low): the account gets no means at substantial
        "name": "one",
    }
    client._with_dpop("POST", "/api/smartcard/enroll", at, dpop, json=body)
    with pytest.raises(Exception) as exc:
        client._with_dpop("POST", "/api/smartcard/enroll", at, dpop, json=body)
    assert getattr(exc.value, "error", "") == "invalid_challenge"
    _denied(world, "smartcard.enroll", "invalid_challenge")
    del url


def test_attestation_for_another_challenge_is_refused(world: World) -> None:
    browser = citizen(world, "dora@example.org")
    at, dpop = app_token(world, browser, "dora@example.org")
    token, client = world.device()
    ch = client._with_dpop("POST", "/api/smartcard/challenge", at, dpop, json={})
    body = {
        "challenge": ch["challenge"],
        "csr": b64url(token.csr()),
        "attestation": evidence_to_json(token.attestation(secrets.token_bytes(32), world.profile())),
        "name": "phone",
    }
    with pytest.raises(Exception) as exc:
        client._with_dpop("POST", "/api/smartcard/enroll", at, dpop, json=body)
    assert getattr(exc.value, "error", "") == "attestation_failed"
    _denied(world, "smartcard.enroll", "attestation_failed")
    with transaction(world.idp.sessions()) as s:
        assert s.query(Device).count() == 0  # nothing stored


def test_attested_key_must_be_the_csr_key(world: World) -> None:
    browser = citizen(world, "emil@example.org")
    at, dpop = app_token(world, browser, "emil@example.org")
    token, client = world.device()
    ch = client._with_dpop("POST", "/api/smartcard/challenge", at, dpop, json={})
    other = ec.generate_private_key(ec.SECP256R1())
    body = {
        "challenge": ch["challenge"],
        "csr": b64url(token.csr(other)),
        "attestation": evidence_to_json(token.attestation(b64url_decode(ch["challenge"]), world.profile())),
        "name": "phone",
    }
    with pytest.raises(Exception) as exc:
        client._with_dpop("POST", "/api/smartcard/enroll", at, dpop, json=body)
    assert getattr(exc.value, "error", "") == "key_mismatch"
    _denied(world, "smartcard.enroll", "key_mismatch")


def test_signature_by_another_key_is_refused(world: World, alice: Any) -> None:
    browser, device = alice
    _login_waiting(world, browser)
    item = device.pending()[0]
    url = f"{world.idp.url}/api/smartcard/approve"
    header = {
        "typ": "device-proof+jwt",
        "alg": "ES256",
        "x5c": [base64.b64encode(device.token.certificate_der).decode()],
    }
    claims = {
        "jti": "x",
        "htm": "POST",
        "htu": url,
        "iat": int(time.time()),
        "challenge": item["challenge"],
        "binding_code": item["binding_code"],
        "service_name": item["service_name"],
        "amount": None,
        "decision": "approve",
    }
    forged = es256_jws(ec.generate_private_key(ec.SECP256R1()), header, claims)
    r = requests.post(url, json={"approval": forged}, timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "invalid_device_proof"
    _denied(world, "smartcard.approve", "invalid_device_proof")
    assert device.pending()  # still waiting: nothing changed


@pytest.mark.parametrize("iat", [10**400, -(10**400)])
def test_a_device_proof_with_an_iat_beyond_a_float_is_refused_not_a_500(
    world: World, alice: Any, iat: int
) -> None:
    browser, device = alice
    _login_waiting(world, browser)
    item = device.pending()[0]
    r = _approve(world, device.token, item, iat=iat)
    assert r.status_code == 401 and r.json()["error"] == "invalid_device_proof"
    _denied(world, "smartcard.approve", "invalid_device_proof")
    assert device.pending()  # still waiting: nothing changed


def test_changed_binding_data_is_refused(world: World, alice: Any) -> None:
    browser, device = alice
    _login_waiting(world, browser)
    item = device.pending()[0]
    r = _approve(world, device.token, item, service_name="Another service")
    assert r.status_code == 400 and r.json()["error"] == "binding_mismatch"
    _denied(world, "smartcard.approve", "binding_mismatch")


def test_foreign_certificate_is_refused(world: World, alice: Any) -> None:
    browser, device = alice
    _login_waiting(world, browser)
    item = device.pending()[0]
    # a certificate for the same key from a CA that looks alike but is not ours
    foreign_root = make_test_root("cityid Issuing CA 1")
    inter = make_intermediate(foreign_root, "cityid Issuing CA 1")
    real = x509.load_der_x509_certificate(device.token.certificate_der)
    fake = (
        x509.CertificateBuilder(extensions=list(real.extensions))
        .subject_name(real.subject)
        .issuer_name(inter.certificate.subject)
        .public_key(device.token.key.public_key())
        .serial_number(real.serial_number)
        .not_valid_before(real.not_valid_before_utc)
        .not_valid_after(real.not_valid_after_utc)
        .sign(inter.key, __import__("cryptography.hazmat.primitives.hashes", fromlist=["SHA256"]).SHA256())
    )
    device.token.state["certificate"] = fake.public_bytes(serialization.Encoding.PEM).decode()
    r = _approve(world, device.token, item)
    assert r.status_code == 401 and r.json()["error"] == "invalid_certificate"
    _denied(world, "smartcard.approve", "invalid_certificate")


def test_expired_certificate_is_refused_rfc5280_6_1_3(world: World, alice: Any) -> None:
    browser, device = alice
    _login_waiting(world, browser)
    item = device.pending()[0]
    cfg = world.idp.config
    with transaction(world.idp.sessions()) as s:
        ca = pki.load_ca(s, cfg.ca, pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase), cfg.issuer)
        row = s.query(Device).one()
        old = pki.issue(
            s,
            ca,
            pki.IssueRequest(
                device.token.csr(), "device-auth", device_id=row.id, validity=dt.timedelta(days=1)
            ),
            now=dt.datetime.now(dt.UTC) - dt.timedelta(days=3),
        )
        row.cert_fingerprint, row.cert_serial = old.fingerprint_sha256, old.serial
    device.token.state["certificate"] = old.certificate_pem.decode()
    r = _approve(world, device.token, item)
    assert r.status_code == 401 and r.json()["error"] == "invalid_certificate"
    assert "expired" in r.json()["error_description"]
    _denied(world, "smartcard.approve", "invalid_certificate")


def test_revoked_certificate_is_refused_from_the_database(world: World, alice: Any) -> None:
    browser, device = alice
    _login_waiting(world, browser)
    item = device.pending()[0]
    cfg = world.idp.config
    with transaction(world.idp.sessions()) as s:
        ca = pki.load_ca(s, cfg.ca, pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase), cfg.issuer)
        pki.revoke(s, ca, s.query(Device).one().cert_serial, "keyCompromise", actor="test")
    r = _approve(world, device.token, item)
    assert r.status_code == 401 and r.json()["error"] == "certificate_revoked"
    _denied(world, "smartcard.approve", "certificate_revoked")


def test_software_key_cannot_confirm_substantial(world: World, alice: Any) -> None:
    browser, device = alice
    # the app (its own browser session) adds a further device: at substantial, the phone confirms
    at, dpop = app_token(world, Browser(world.idp), "alice@example.org", device)
    soft, soft_client = world.device("soft")
    result = soft_client.enrol(at, dpop, name="laptop", attestation=None)  # no attestation
    assert result["security_level"] == "software" and result["max_level"] == "low"
    _login_waiting(world, browser)
    item = soft_client.pending()[0]
    r = _approve(world, soft, item)
    assert r.status_code == 403 and r.json()["error"] == "insufficient_device_level"
    _denied(world, "smartcard.approve", "insufficient_device_level")


def test_software_key_only_account_cannot_reach_substantial(world: World) -> None:
    browser = citizen(world, "fritz@example.org")
    at, dpop = app_token(world, browser, "fritz@example.org")
    _soft, client = world.device("soft")
    # Android attestation of a software-backed key is refused outright (below the app's TEE floor)
    with pytest.raises(Exception) as exc:
        client.enrol(at, dpop, name="laptop", attestation=world.profile("software"))
    assert getattr(exc.value, "error", "") == "attestation_failed"
    _denied(world, "smartcard.enroll", "attestation_failed")
    # without attestation the key is enrolled as software: low at most
    assert client.enrol(at, dpop, name="laptop", attestation=None)["max_level"] == "low"
    page, _ = rp_authorize(world, browser, claims=ESSENTIAL)
    assert page.status_code in (302, 303)
    assert "error=unmet_authentication_requirements" in page.headers["Location"]


def test_device_of_citizen_a_cannot_answer_for_citizen_b(world: World, alice: Any) -> None:
    _browser_a, device_a = alice
    browser_b, _device_b = enrolled(world, "bob@example.org", name="bobs-phone")
    public_id = _login_waiting(world, browser_b)
    with transaction(world.idp.sessions()) as s:
        row = s.query(Challenge).filter(Challenge.public_id == public_id).one()
        item = {
            "challenge": row.value,
            "binding_code": row.binding_code,
            "service_name": row.service_name,
            "amount": row.amount,
        }
    assert device_a.pending() == []  # A's device never sees B's challenges
    r = _approve(world, device_a.token, item)
    assert r.status_code == 403 and r.json()["error"] == "access_denied"
    _denied(world, "smartcard.approve", "access_denied")


def test_enrolment_needs_a_dpop_bound_token(world: World) -> None:
    r = requests.post(f"{world.idp.url}/api/smartcard/challenge", json={}, timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"


@pytest.mark.parametrize("body", ["not json", "[]", '{"approval": 5}', '{"approval": "a.b.c"}'])
def test_malformed_approvals_are_protocol_errors(world: World, body: str) -> None:
    r = requests.post(
        f"{world.idp.url}/api/smartcard/approve",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code in (400, 401)
    assert set(r.json()) == {"error", "error_description"}


def test_a_password_alone_cannot_add_a_device_next_to_one_at_substantial_eidas_annex_2_2_4(
    world: World, alice: Any
) -> None:
    """A phished password plus the attacker's own genuine phone must not reach substantial."""
    _browser, device = alice
    thief = Browser(world.idp)  # knows the password only
    at, dpop = app_token(world, thief, "alice@example.org")
    _token, phone = world.device("thief's phone")
    with pytest.raises(Exception) as exc:
        phone.enrol(at, dpop, name="mine", attestation=world.profile("tee"))
    assert getattr(exc.value, "error", "") == "step_up_required"
    _denied(world, "smartcard.enroll", "step_up_required")
    # the owner, confirming with the phone she has, adds a second one
    at, dpop = app_token(world, Browser(world.idp), "alice@example.org", device)
    _token, tablet = world.device("tablet")
    assert (
        tablet.enrol(at, dpop, name="Tablet", attestation=world.profile("tee"))["max_level"] == "substantial"
    )
    # a login at substantial whose factors are hours old (an unattended browser) is not enough
    at, dpop = app_token(world, Browser(world.idp), "alice@example.org", device)
    with transaction(world.idp.sessions()) as s:
        for grant in s.query(Grant).filter(Grant.acr == "http://eidas.europa.eu/LoA/substantial"):
            grant.auth_time = int(time.time()) - 7200
    _token, third = world.device("third")
    with pytest.raises(Exception) as exc:
        third.enrol(at, dpop, name="third", attestation=world.profile("tee"))
    assert getattr(exc.value, "error", "") == "step_up_required"


def test_a_device_proof_with_a_non_ec_certificate_is_refused_and_audited_not_a_500(world: World) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    url = f"{world.idp.url}/api/smartcard/pending"
    claims = {"jti": "j1", "htm": "GET", "htu": url, "iat": int(time.time())}
    proof = es256_jws(
        ec.generate_private_key(ec.SECP256R1()),
        {"typ": "device-proof+jwt", "alg": "ES256", "x5c": x5c},
        claims,
    )
    r = requests.get(url, headers={"Authorization": f"Device {proof}"}, timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "invalid_certificate"
    _denied(world, "smartcard.pending", "invalid_certificate")


def test_an_approval_for_one_service_does_not_complete_another_dynamic_linking(world: World) -> None:
    """PSD2 RTS (EU) 2018/389 Art. 5: what the citizen approved on the phone ("Library") must be
    what the browser completes; a stale approval taken while "Parking permits" waits is refused."""
    import re
    from urllib.parse import urlencode

    from tests.idp.conftest import csrf, pkce_pair
    from tests.smartcard.conftest import RP_REDIRECT

    library, _secret = world.idp.add_client(name="Library", redirect_uris=[RP_REDIRECT], scope="openid")
    browser, device = enrolled(world, "erika@example.org")
    _v, challenge = pkce_pair()
    q = {
        "response_type": "code",
        "client_id": library,
        "redirect_uri": RP_REDIRECT,
        "scope": "openid",
        "state": "a",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "claims": ESSENTIAL,
    }
    page_a = browser.follow(browser.get(f"{world.idp.url}/authorize?{urlencode(q)}"))
    id_a, _ = device_page_id(page_a)
    (item,) = device.pending()
    assert item["service_name"] == "Library" and device.answer(item) == {"status": "approved"}

    page_b, _verifier = rp_authorize(world, browser, claims=ESSENTIAL)  # now Parking permits waits
    assert "Parking permits" in page_b.text
    action = re.search(r'<form method="post" action="([^"]+)" id="device-continue"', page_b.text)
    assert action
    target = world.idp.url + action.group(1).replace("&amp;", "&")
    r = browser.post(target, {"csrf_token": csrf(page_b.text), "id": id_a})
    assert r.status_code == 403 and "Location" not in r.headers
    _denied(world, "login.pki2fa", "invalid_challenge")


def test_an_approval_from_a_device_whose_certificate_was_revoked_is_not_taken_rfc5280_3_3(
    world: World, alice: Any
) -> None:
    browser, device = alice
    page, _ = rp_authorize(world, browser, claims=ESSENTIAL)
    (item,) = device.pending()
    assert device.answer(item) == {"status": "approved"}
    cfg = world.idp.config
    with transaction(world.idp.sessions()) as s:  # e.g. revoked for key compromise at the CA
        ca = pki.load_ca(s, cfg.ca, pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase), cfg.issuer)
        pki.revoke(s, ca, s.query(Device).one().cert_serial, "keyCompromise", actor="test")
    r = continue_device(browser, page)
    assert r.status_code == 403
    _denied(world, "login.pki2fa", "invalid_challenge")


def test_hostile_json_in_proofs_and_authorization_details_is_refused_not_a_500(
    world: World, alice: Any
) -> None:
    from joserfc import jws as joserfc_jws
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256", private=True)
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    nested = joserfc_jws.serialize_compact(header, b"[" * 2000, key)  # JSON nested too deep
    r = requests.post(
        f"{world.idp.url}/token",
        data={"grant_type": "client_credentials"},
        headers={"DPoP": nested},
        timeout=10,
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_dpop_proof"
    browser, _device = alice
    details = "[" * 2000
    page, _ = rp_authorize(
        world, browser, claims=ESSENTIAL, scope="openid payment", authorization_details=details
    )
    assert page.status_code == 200 and "/login/device" in page.url  # the step page, without an amount
