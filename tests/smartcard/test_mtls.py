"""RFC 8705: access tokens bound to the device certificate presented over mutual TLS.

TLS ends at the proxy, which passes the verified client certificate in the configured header;
the tests play that proxy by setting the header.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any
from urllib.parse import quote

import requests
from joserfc import jwt
from joserfc.jwk import KeySet

import pki
from db import transaction, utcnow
from idp.oauth.mtls import thumbprint
from smartcard.revoke import revoke_device
from tests.smartcard.conftest import World, app_code_request, enrolled

HEADER = "X-SSL-Client-Cert"


def _configure_proxy_header(world: World) -> None:
    rt = world.idp.app.extensions["cityid"]
    rt.config = dataclasses.replace(rt.config, mtls_client_cert_header=HEADER)
    # the discovery document is built once at start from the configuration (idp.static_docs): a
    # changed setting means a restart, which this stands for
    from idp.static_docs import StaticDocuments, discovery_document

    layer = world.idp.app.wsgi_app
    while not isinstance(layer, StaticDocuments):
        layer = layer.wrapped
    layer.discovery = layer._prepared(discovery_document(rt.config))


def _token_with_cert(world: World, browser: Any, address: str, cert_pem: str | None) -> requests.Response:
    data = app_code_request(world, browser, address, "openid")
    headers = {HEADER: quote(cert_pem)} if cert_pem else {}
    return requests.post(f"{world.idp.url}/token", timeout=10, headers=headers, data=data)


def test_token_bound_to_device_certificate_rfc8705_3(world: World) -> None:
    _configure_proxy_header(world)
    browser, device = enrolled(world, "mara@example.org")
    cert_pem = device.token.state["certificate"]
    r = _token_with_cert(world, browser, "mara@example.org", cert_pem)
    assert r.status_code == 200, r.text
    at = r.json()["access_token"]
    jwks = KeySet.import_key_set(requests.get(f"{world.idp.url}/jwks.json", timeout=10).json())
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    assert jwt.decode(at, jwks).claims["cnf"]["x5t#S256"] == thumbprint(cert)
    meta = requests.get(f"{world.idp.url}/.well-known/openid-configuration", timeout=10).json()
    assert meta["tls_client_certificate_bound_access_tokens"] is True

    url = f"{world.idp.url}/api/demo/resource"
    ok = requests.get(url, timeout=10, headers={"Authorization": f"Bearer {at}", HEADER: quote(cert_pem)})
    assert ok.status_code == 200, ok.text
    # RFC 8705 §3.2: without the certificate, or with another one, the token is refused
    assert requests.get(url, timeout=10, headers={"Authorization": f"Bearer {at}"}).status_code == 401
    _b2, other = enrolled(world, "otto@example.org", name="other")
    other_pem = other.token.state["certificate"]
    r = requests.get(url, timeout=10, headers={"Authorization": f"Bearer {at}", HEADER: quote(other_pem)})
    assert r.status_code == 401
    assert world.audit("resource.refuse", "denied")


def test_certificate_of_another_citizens_device_is_refused(world: World) -> None:
    _configure_proxy_header(world)
    browser, _mine = enrolled(world, "mia@example.org")
    _b2, theirs = enrolled(world, "tom@example.org", name="theirs")
    r = _token_with_cert(world, browser, "mia@example.org", theirs.token.state["certificate"])
    assert r.status_code in (400, 401) and r.json()["error"] == "invalid_client"


def test_revoked_or_foreign_certificate_is_refused_at_the_token_endpoint(world: World) -> None:
    _configure_proxy_header(world)
    browser, device = enrolled(world, "ria@example.org")
    cfg = world.idp.config
    with transaction(world.idp.sessions()) as s:
        ca = pki.load_ca(s, cfg.ca, pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase), cfg.issuer)
        revoke_device(s, ca, device.token.state["device_id"], actor="admin", reason="test", now=utcnow())
    r = _token_with_cert(world, browser, "ria@example.org", device.token.state["certificate"])
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # a certificate our CA never issued (the attestation test root's own certificate)
    foreign = (world.root_dir / "attestation-root.pem").read_text()
    r = _token_with_cert(world, browser, "ria@example.org", foreign)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = _token_with_cert(world, browser, "ria@example.org", "-----BEGIN CERTIFICATE-----\nnope\n")
    assert r.status_code == 401
    assert world.audit("token.refuse", "denied")


def test_a_public_clients_refresh_token_needs_its_device_certificate_rfc8705_4(world: World) -> None:
    _configure_proxy_header(world)
    browser, device = enrolled(world, "mara@example.org")
    cert_pem = device.token.state["certificate"]
    tok = _token_with_cert(world, browser, "mara@example.org", cert_pem).json()

    def refresh(rt: str, pem: str | None) -> requests.Response:
        data = {"grant_type": "refresh_token", "refresh_token": rt, "client_id": world.app_id}
        headers = {HEADER: quote(pem)} if pem else {}
        return requests.post(f"{world.idp.url}/token", timeout=10, headers=headers, data=data)

    assert refresh(tok["refresh_token"], None).status_code == 400  # a leaked refresh token alone
    _b2, other = enrolled(world, "otto@example.org", name="other")
    assert refresh(tok["refresh_token"], other.token.state["certificate"]).status_code == 400
    r = refresh(tok["refresh_token"], cert_pem)
    assert r.status_code == 200, r.text
    jwks = KeySet.import_key_set(requests.get(f"{world.idp.url}/jwks.json", timeout=10).json())
    assert "x5t#S256" in jwt.decode(r.json()["access_token"], jwks).claims["cnf"]  # still bound


def test_the_refresh_token_binding_moves_with_a_certificate_renewal_rfc8705_4(world: World) -> None:
    _configure_proxy_header(world)
    browser, device = enrolled(world, "mara@example.org")
    tok = _token_with_cert(world, browser, "mara@example.org", device.token.state["certificate"]).json()
    holder = world.idp.app.extensions["cityid.smartcard"]
    holder["settings"] = dataclasses.replace(holder["settings"], renew_before=dt.timedelta(days=3650))
    device.renew()  # a new certificate for the same key; the old one is superseded
    data = {"grant_type": "refresh_token", "refresh_token": tok["refresh_token"], "client_id": world.app_id}
    headers = {HEADER: quote(device.token.state["certificate"])}
    r = requests.post(f"{world.idp.url}/token", timeout=10, headers=headers, data=data)
    assert r.status_code == 200, r.text  # the app stays logged in


def test_removing_a_device_ends_its_certificate_bound_tokens_rfc8705_3_and_4(world: World) -> None:
    from sqlalchemy import select

    from idp.models import Grant
    from idp.views.smartcard import revoke_for

    _configure_proxy_header(world)
    url = f"{world.idp.url}/api/demo/resource"
    for how in ("device removal", "certificate revocation alone"):
        email = "lea@example.org" if how == "device removal" else "ben@example.org"
        browser, device = enrolled(world, email, name=how)
        cert_pem = device.token.state["certificate"]
        at = _token_with_cert(world, browser, email, cert_pem).json()["access_token"]
        headers = {"Authorization": f"Bearer {at}", HEADER: quote(cert_pem)}
        assert requests.get(url, timeout=10, headers=headers).status_code == 200
        cfg = world.idp.config
        with world.idp.app.app_context(), transaction(world.idp.sessions()) as s:
            ca = pki.load_ca(
                s, cfg.ca, pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase), cfg.issuer
            )
            device_id = device.token.state["device_id"]
            if how == "device removal":  # what the citizen's page and `cityid device revoke` do
                revoke_for(s, ca)(device_id, actor="admin", reason="lost", now=utcnow())
            else:  # the grant stays: the resource must still see the certificate is done
                revoke_device(s, ca, device_id, actor="admin", reason="lost", now=utcnow())
        r = requests.get(url, timeout=10, headers=headers)
        assert r.status_code == 401 and r.json()["error"] == "invalid_token", how
        if how == "device removal":
            with world.idp.sessions()() as s:
                bound = s.execute(select(Grant).where(Grant.cnf_x5t.is_not(None))).scalars().all()
                assert bound and all(g.revoked_at is not None for g in bound)  # refresh tokens too
