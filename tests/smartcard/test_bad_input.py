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
from smartcard.evidence import make_intermediate, make_test_root
from smartcard.models import Challenge, Device
from smartcard.softtoken import DeviceClient, SoftToken, b64url, b64url_decode, es256_jws
from smartcard.wire import evidence_to_json
from tests.smartcard.conftest import World, app_token, citizen, device_page_id, enrolled, rp_authorize

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
    raw = b64url_decode(ch["challenge"])
    body = {
        "challenge": ch["challenge"],
        "csr": b64url(token.csr()),
        "attestation": evidence_to_json(token.attestation(raw, world.profile())),
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
    browser, _device = alice
    at, dpop = app_token(world, browser, "alice@example.org")
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
