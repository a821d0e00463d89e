"""Shared by the citizen-signature tests: a cityid with a signing service, a citizen with an
enrolled soft token, the service's token (scope ``sign``, substantial), PDFs, pdfsig."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.writer import PdfFileWriter
from sqlalchemy import func, select

from db import transaction
from signing.citizen_models import CitizenSignatureRequest
from smartcard.softtoken import DeviceClient, DpopSigner
from tests.idp.conftest import Browser, pkce_pair, query
from tests.smartcard.conftest import World, continue_device, enrolled

SERVICE = "Bauamt Musterstadt"
SERVICE_REDIRECT = "http://127.0.0.1:9/bauamt"


@dataclass
class Service:
    """A relying service that asks citizens to sign (confidential client, scope ``sign``)."""

    world: World
    client_id: str
    secret: str
    access_token: str = ""
    dpop: DpopSigner | None = None

    @property
    def url(self) -> str:
        return f"{self.world.idp.url}/api/signatures"

    def _headers(self, method: str, url: str) -> dict[str, str]:
        if self.dpop is None:
            return {"Authorization": f"Bearer {self.access_token}"}
        return {
            "Authorization": f"DPoP {self.access_token}",
            "DPoP": self.dpop.proof(method, url, self.access_token),
        }

    def _send(self, method: str, url: str, **kw: Any) -> requests.Response:
        for _ in range(2):  # RFC 9449 §8: one retry with the server's nonce
            r = requests.request(
                method, url, headers={**kw.pop("headers", {}), **self._headers(method, url)}, timeout=60, **kw
            )
            if r.status_code == 401 and self.dpop is not None and "DPoP-Nonce" in r.headers:
                if self.dpop.nonce != r.headers["DPoP-Nonce"]:
                    self.dpop.nonce = r.headers["DPoP-Nonce"]
                    continue
            return r
        return r

    def post_pdf(
        self, data: bytes, content_type: str = "application/pdf", **params: str
    ) -> requests.Response:
        url = self.url + (f"?{urlencode(params)}" if params else "")
        return self._send("POST", url, data=data, headers={"Content-Type": content_type})

    def fetch(self, request_id: str) -> requests.Response:
        return self._send("GET", f"{self.url}/{request_id}")


def add_service(world: World) -> Service:
    client_id, secret = world.idp.add_client(
        name=SERVICE, redirect_uris=[SERVICE_REDIRECT], scope="openid sign", min_level=None
    )
    assert secret
    return Service(world, client_id, secret)


def login_service(
    service: Service, browser: Browser, device: DeviceClient | None, *, dpop: bool = True
) -> Service:
    """The citizen logs in to the service with scope ``sign``: cityid steps up to substantial
    (the device confirms, PKI-2FA) and the service redeems the code (DPoP-bound if ``dpop``)."""
    world = service.world
    verifier, challenge = pkce_pair()
    q = {
        "response_type": "code",
        "client_id": service.client_id,
        "redirect_uri": SERVICE_REDIRECT,
        "scope": "openid sign",
        "state": "st",
        "nonce": "n",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    page = browser.follow(browser.get(f"{world.idp.url}/authorize?{urlencode(q)}"))
    if device is not None:
        assert "/login/device" in page.url, (page.status_code, page.url, page.text[:300])
        (item,) = device.pending()
        assert device.answer(item) == {"status": "approved"}
        page = continue_device(browser, page)
    if page.status_code == 200 and 'name="decision"' in page.text:
        page = browser.consent(page)
    assert page.status_code in (302, 303), (page.status_code, page.url, page.text[:500])
    signer = DpopSigner() if dpop else None
    url = f"{world.idp.url}/token"
    data = {
        "grant_type": "authorization_code",
        "code": query(page.headers["Location"])["code"],
        "redirect_uri": SERVICE_REDIRECT,
        "code_verifier": verifier,
    }
    for _ in range(2):
        headers = {"DPoP": signer.proof("POST", url)} if signer else {}
        r = requests.post(
            url, data=data, auth=(service.client_id, service.secret), headers=headers, timeout=10
        )
        if signer and r.status_code == 400 and r.json().get("error") == "use_dpop_nonce":
            signer.nonce = r.headers["DPoP-Nonce"]
            continue
        break
    assert r.status_code == 200, r.text
    service.access_token = r.json()["access_token"]
    service.dpop = signer
    return service


def signer_setup(world: World, address: str, *, dpop: bool = True) -> tuple[Service, Browser, DeviceClient]:
    browser, device = enrolled(world, address)
    service = login_service(add_service(world), browser, device, dpop=dpop)
    return service, browser, device


def make_pdf(title: str = "Antrag auf Bewohnerparkausweis", pages: int = 1, *, password: str = "") -> bytes:
    w = PdfFileWriter(stream_xrefs=False)
    for i in range(pages):
        page = generic.DictionaryObject(
            {
                generic.NameObject("/Type"): generic.NameObject("/Page"),
                generic.NameObject("/MediaBox"): generic.ArrayObject(
                    [generic.NumberObject(n) for n in (0, 0, 595, 842)]
                ),
            }
        )
        w.insert_page(page)
    info = generic.DictionaryObject({generic.NameObject("/Title"): generic.TextStringObject(title)})
    w._info = w.add_object(info)
    if password:
        w.encrypt("owner-" + password, password)
    buf = io.BytesIO()
    w.write(buf)
    return buf.getvalue()


def request_rows(world: World) -> list[dict[str, Any]]:
    """Every signature request as stored (to prove that a refusal changed nothing)."""
    with transaction(world.idp.sessions()) as s:
        rows = s.execute(
            select(CitizenSignatureRequest).order_by(CitizenSignatureRequest.created_at)
        ).scalars()
        return [
            {c.name: getattr(r, c.name) for c in CitizenSignatureRequest.__table__.columns}  # type: ignore[attr-defined]
            for r in rows
        ]


def request_count(world: World) -> int:
    with transaction(world.idp.sessions()) as s:
        return int(s.execute(select(func.count()).select_from(CitizenSignatureRequest)).scalar_one())


def root_pem(world: World) -> bytes:
    r = requests.get(f"{world.idp.url}/pki/root.crt", timeout=10)
    assert r.status_code == 200
    from cryptography import x509

    return x509.load_der_x509_certificate(r.content).public_bytes(serialization.Encoding.PEM)


def pdfsig(pdf: Path, root: bytes, tmp: Path) -> str:
    """Poppler's pdfsig with a fresh NSS database that trusts only the city root."""
    if shutil.which("pdfsig") is None:
        pytest.fail("pdfsig missing: apt-get install poppler-utils libnss3-tools (scripts/system-deps.sh)")
    nss = tmp / f"nss-{pdf.stem}"
    nss.mkdir()
    (nss / "root.pem").write_bytes(root)
    subprocess.run(
        ["certutil", "-N", "-d", f"sql:{nss}", "--empty-password"], check=True, capture_output=True
    )
    subprocess.run(
        [
            "certutil",
            "-A",
            "-d",
            f"sql:{nss}",
            "-n",
            "city-root",
            "-t",
            "CT,C,C",
            "-i",
            str(nss / "root.pem"),
        ],
        check=True,
        capture_output=True,
    )
    out = subprocess.run(["pdfsig", "-nssdir", f"sql:{nss}", str(pdf)], capture_output=True, text=True)
    return out.stdout + out.stderr


def as_json(r: requests.Response) -> dict[str, Any]:
    try:
        body: dict[str, Any] = r.json()
    except ValueError:
        raise AssertionError(f"not JSON: {r.status_code} {r.text[:300]}") from None
    return body


__all__ = ["json"]
