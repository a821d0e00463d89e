"""A cityid with a CA and a trusted TEST attestation root; the city app and a relying service."""

from __future__ import annotations

import email
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from email import policy
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from sqlalchemy import select

import pki
from db import audit as _audit  # noqa: F401  (AuditEvent table)
from db import transaction
from db.audit import AuditEvent
from smartcard.softtoken import AttestationProfile, DeviceClient, DpopSigner, SoftToken, write_test_root
from tests.idp.conftest import Browser, Idp, csrf, idp_factory, pkce_pair, query

__all__ = ["idp_factory"]

PASSWORD = "correct horse battery staple"
APP_REDIRECT = "http://127.0.0.1:9/app"
RP_REDIRECT = "http://127.0.0.1:9/rp"
PACKAGE = "de.musterstadt.cityapp"
SIGNING_DIGEST = hashlib.sha256(b"cityid test app signing certificate").digest()


@dataclass
class World:
    idp: Idp
    root_dir: Path
    app_id: str
    rp_id: str
    rp_secret: str
    tmp: Path

    def profile(self, level: str = "tee") -> AttestationProfile:
        return AttestationProfile(self.root_dir, PACKAGE, SIGNING_DIGEST, level)

    def audit(self, action: str, outcome: str | None = None) -> list[AuditEvent]:
        with transaction(self.idp.sessions()) as s:
            q = select(AuditEvent).where(AuditEvent.action == action)
            if outcome:
                q = q.where(AuditEvent.outcome == outcome)
            rows = list(s.execute(q.order_by(AuditEvent.seq)).scalars())
            s.expunge_all()
            return rows

    def device(self, name: str = "phone") -> tuple[SoftToken, DeviceClient]:
        token = SoftToken.create(self.tmp / f"dev-{name}-{secrets.token_hex(3)}", server=self.idp.url)
        return token, DeviceClient(token)


@pytest.fixture
def world(idp_factory: Any, tmp_path: Path) -> World:
    root_dir = tmp_path / "att-root"
    cert, _key = write_test_root(root_dir)
    status_list = tmp_path / "attestation-status.json"
    status_list.write_text('{"entries": {}}')
    from idp.config import SmartcardConfig

    idp: Idp = idp_factory(
        smartcard=SmartcardConfig(
            android_package=PACKAGE,
            android_signing_digests=SIGNING_DIGEST.hex(),
            extra_android_roots_file=str(cert),
            vendor_roots=False,
            android_revocation_list_file=str(status_list),
        )
    )
    cfg = idp.config
    with transaction(idp.sessions()) as s:
        pki.init_ca(s, cfg.ca, pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase), cfg.issuer)
    app_id, _ = idp.add_client(
        name="City app", redirect_uris=[APP_REDIRECT], auth_method="none", scope="openid smartcard:enroll"
    )
    rp_id, rp_secret = idp.add_client(
        name="Parking permits", redirect_uris=[RP_REDIRECT], scope="openid payment", min_level=None
    )
    assert rp_secret
    return World(idp, root_dir, app_id, rp_id, rp_secret, tmp_path)


# --------------------------------------------------------------------------- citizen helpers


def register(world: World, browser: Browser, address: str) -> None:
    """Register through the pages and follow the link from the outbox."""
    idp = world.idp
    page = browser.get(f"{idp.url}/register")
    r = browser.post(
        f"{idp.url}/register",
        {"csrf_token": csrf(page.text), "email": address, "password": PASSWORD, "password2": PASSWORD},
    )
    assert r.status_code == 200, r.text
    link = None
    deadline = time.monotonic() + 10  # the mail thread writes it right after the request
    while link is None and time.monotonic() < deadline:
        for eml in sorted(idp.config.outbox_dir.glob("*.eml")):
            msg = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
            if address in str(msg["To"]):
                body = msg.get_body(preferencelist=("plain",))
                assert body is not None
                m = re.search(r"(http\S+/verify\?token=\S+)", body.get_content())
                link = m.group(1) if m else None
        time.sleep(0.02)
    assert link, "no verification mail"
    assert browser.confirm_link(link).status_code == 200


def app_code_request(
    world: World, browser: Browser, address: str, scope: str, device: DeviceClient | None = None
) -> dict[str, str]:
    """The city app's code flow up to the code: returns the token request's form (code + PKCE).
    With ``device``, the app asks for substantial and ``device`` confirms (PKI-2FA)."""
    idp = world.idp
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": world.app_id,
        "redirect_uri": APP_REDIRECT,
        "scope": scope,
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if device is not None:  # a further device: every factor of this login at most 10 minutes old
        params["acr_values"] = "http://eidas.europa.eu/LoA/substantial"
        params["max_age"] = "600"
    r = browser.follow(browser.get(f"{idp.url}/authorize?{urlencode(params)}"))
    if r.status_code == 200 and 'name="password"' in r.text:
        r = browser.login(address, PASSWORD, r)
    if device is not None and r.status_code == 200 and "/login/device" in r.url:
        (item,) = device.pending()
        assert device.answer(item) == {"status": "approved"}
        r = continue_device(browser, r)
    if r.status_code == 200 and 'name="decision"' in r.text:
        r = browser.consent(r)
    return {
        "grant_type": "authorization_code",
        "code": query(r.headers["Location"])["code"],
        "redirect_uri": APP_REDIRECT,
        "client_id": world.app_id,
        "code_verifier": verifier,
    }


def app_token(
    world: World, browser: Browser, address: str, device: DeviceClient | None = None
) -> tuple[str, DpopSigner]:
    """The city app logs the citizen in (low; with ``device``: substantial, the device confirms)
    and gets a DPoP-bound smartcard:enroll token. A further device needs the latter."""
    idp = world.idp
    data = app_code_request(world, browser, address, "openid smartcard:enroll", device)
    dpop = DpopSigner()
    for _ in range(2):
        resp = requests.post(
            f"{idp.url}/token",
            data=data,
            headers={"DPoP": dpop.proof("POST", f"{idp.url}/token")},
            timeout=10,
        )
        if resp.status_code == 400 and resp.json().get("error") == "use_dpop_nonce":
            dpop.nonce = resp.headers["DPoP-Nonce"]
            continue
        break
    assert resp.status_code == 200, resp.text
    tok = resp.json()
    assert tok["token_type"] == "DPoP"
    return tok["access_token"], dpop


def citizen(world: World, address: str) -> Browser:
    b = Browser(world.idp)
    register(world, b, address)
    return b


def enrolled(
    world: World, address: str, level: str = "tee", name: str = "phone"
) -> tuple[Browser, DeviceClient]:
    b = citizen(world, address)
    at, dpop = app_token(world, b, address)
    _token, client = world.device(name)
    client.enrol(at, dpop, name=name, attestation=world.profile(level))
    return b, client


def rp_authorize(world: World, browser: Browser, **params: str) -> tuple[requests.Response, str]:
    verifier, challenge = pkce_pair()
    q = {
        "response_type": "code",
        "client_id": world.rp_id,
        "redirect_uri": RP_REDIRECT,
        "scope": "openid",
        "state": "st",
        "nonce": "n",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **params,
    }
    return browser.follow(browser.get(f"{world.idp.url}/authorize?{urlencode(q)}")), verifier


def device_page_id(page: requests.Response) -> tuple[str, str]:
    m = re.search(r'data-id="([^"]+)"', page.text)
    code = re.search(r'class="binding-code">([^<]+)<', page.text)
    assert m and code, page.text[:1500]
    return m.group(1), code.group(1)


def continue_device(browser: Browser, page: requests.Response) -> requests.Response:
    """The no-JS "check again" button."""
    public_id, _ = device_page_id(page)
    action = re.search(r'<form method="post" action="([^"]+)" id="device-continue"', page.text)
    assert action
    target = browser.idp.url + action.group(1).replace("&amp;", "&")
    return browser.follow(browser.post(target, {"csrf_token": csrf(page.text), "id": public_id}))
