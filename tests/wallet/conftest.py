"""A cityid with the wallet route, a TEST PID provider whose status list is served over real
HTTP, and a holder (walletsim) that answers like a wallet app."""

from __future__ import annotations

import html
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization

from idp.config import WalletConfig
from tests.conftest import SERVER_POLL_SECONDS
from tests.idp.conftest import Browser, Idp, idp_factory
from tests.stepup.conftest import post_form
from walletsim.holder import Holder
from walletsim.pid import TestPidProvider, make_ca, make_leaf

__all__ = ["idp_factory"]

SAME_DEVICE_RE = re.compile(r'href="(openid4vp://[^"]+)"')


@dataclass
class WalletWorld:
    idp: Idp
    provider: TestPidProvider
    holder: Holder
    credential: str
    index: int


@pytest.fixture
def status_server() -> Any:
    """Serves the provider's status list token, as its own HTTP server."""
    box: dict[str, TestPidProvider] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = box["provider"].status_list_token().encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/statuslist+jwt")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(SERVER_POLL_SECONDS,), daemon=True).start()
    yield box, f"http://127.0.0.1:{httpd.server_address[1]}/status/1"
    httpd.shutdown()


def _pem(obj: Any) -> bytes:
    if hasattr(obj, "private_bytes"):
        return bytes(
            obj.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return bytes(obj.public_bytes(serialization.Encoding.PEM))


@pytest.fixture
def world(
    idp_factory: Any, status_server: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> WalletWorld:
    box, status_uri = status_server
    provider = TestPidProvider(status_uri=status_uri)
    box["provider"] = provider
    ca_key, ca = make_ca("Musterstadt TEST verifier CA")
    v_key, v_cert = make_leaf(ca_key, ca, "cityid verifier", dns="localhost")
    (tmp_path / "anchors.pem").write_bytes(provider.root_pem)
    (tmp_path / "verifier.key").write_bytes(_pem(v_key))
    (tmp_path / "verifier.pem").write_bytes(_pem(v_cert) + _pem(ca))
    idp = idp_factory(
        host="localhost",
        wallet=WalletConfig(
            enabled=True,
            trust_anchors_file=str(tmp_path / "anchors.pem"),
            verifier_key_file=str(tmp_path / "verifier.key"),
            verifier_cert_file=str(tmp_path / "verifier.pem"),
            simulation=True,
            client_id_prefix=getattr(request, "param", "x509_san_dns"),
        ),
    )
    holder = Holder([ca], requests.get, requests.post)
    credential, index = provider.issue(holder.key)
    holder.credentials.append(credential)
    return WalletWorld(idp, provider, holder, credential, index)


def wallet_link(browser: Browser, page: requests.Response) -> tuple[requests.Response, str]:
    """On the eID page press "Use your ID wallet"; return the wallet page and its same-device link."""
    assert page.status_code == 200 and "/login/eid" in page.url, (page.url, page.text[:300])
    waiting = post_form(browser, page, {"eid": "wallet"})
    assert waiting.status_code == 200 and "/login/eid/wallet" in waiting.url, waiting.text[:500]
    m = SAME_DEVICE_RE.search(waiting.text)
    assert m, waiting.text
    return waiting, html.unescape(m.group(1))
