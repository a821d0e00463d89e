"""Real Chromium (Debian's, headless) through Playwright, one browser per test module.

Module scope, not session scope: other browser suites in the same xdist group (tests/webauthn)
start their own Playwright, and two sync Playwright instances cannot run in one thread at once.

These tests never skip: without /usr/bin/chromium or axe-core they fail and say what to install.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.conftest import SERVER_POLL_SECONDS
from tests.idp.conftest import free_port, idp_factory, pkce_pair, smtp_server  # noqa: F401  (fixtures)
from tests.pages.conftest import _catalogues  # noqa: F401  (fresh .mo files)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CITYID_CHROMIUM", "/usr/bin/chromium")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "tests" / "artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}  # phones first
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `make system-deps` (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Python playwright missing: run `make` to install the dev dependencies")
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
    yield browser
    browser.close()
    pw.stop()


@pytest.fixture
def context(chromium: Any) -> Iterator[Any]:
    # bypass_csp only so that the test can inject axe-core; the CSP itself is tested in tests/pages.
    ctx = chromium.new_context(
        bypass_csp=True, locale="de-DE", viewport=PHONE, accept_downloads=True, service_workers="block"
    )
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


def screenshot(page: Any, name: str) -> Path:
    path = ARTIFACTS / "screens" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def axe(page: Any, name: str) -> dict[str, Any]:
    """Run axe-core on the page at WCAG 2.1 A/AA; fail on any violation, naming each node."""
    if not AXE.exists():
        pytest.fail(f"{AXE} missing: run `make` (npm ci installs axe-core from package-lock.json)")
    page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        WCAG_AA,
    )
    out = ARTIFACTS / "axe" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"url": page.url, "violations": result["violations"], "passes": len(result["passes"])}, indent=1
        )
    )
    problems = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in result["violations"]
    ]
    assert not problems, f"axe on {name} ({page.url}):\n  " + "\n  ".join(problems)
    return result


def tab_to(page: Any, selector: str, *, limit: int = 40) -> None:
    """Press Tab until the element matching `selector` has focus (keyboard reachability)."""
    for _ in range(limit):
        if page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{selector} not reached with {limit} presses of Tab on {page.url}")


def type_into(page: Any, selector: str, text: str) -> None:
    tab_to(page, selector)
    page.keyboard.type(text)


# ----------------------------------------------------------------------------- a demo service


@dataclass
class DemoService:
    """A relying service on loopback: starts the code flow, redeems the code, hears logouts."""

    url: str
    issuer: str
    client_id: str = ""
    secret: str = ""
    flows: dict[str, str] = field(default_factory=dict)  # state -> code_verifier
    claims: list[dict[str, Any]] = field(default_factory=list)
    logouts: list[str] = field(default_factory=list)
    logout_event: threading.Event = field(default_factory=threading.Event)

    @property
    def redirect_uri(self) -> str:
        return self.url + "/callback"

    def start_url(self) -> str:
        return self.url + "/start"


def _page(title: str, body: str) -> bytes:
    return (
        f'<!doctype html><html lang="de"><head><meta charset="utf-8"><title>{title}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
        f"<body><main><h1>{title}</h1>{body}</main></body></html>"
    ).encode()


@pytest.fixture
def demo_service() -> Iterator[DemoService]:
    port = free_port()
    svc = DemoService(url=f"http://127.0.0.1:{port}", issuer="")

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes = b"", location: str | None = None) -> None:
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            q = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if parts.path == "/start":
                verifier, challenge = pkce_pair()
                state = secrets.token_urlsafe(16)
                svc.flows[state] = verifier
                params = {
                    "response_type": "code",
                    "client_id": svc.client_id,
                    "redirect_uri": svc.redirect_uri,
                    "scope": "openid email",
                    "state": state,
                    "nonce": secrets.token_urlsafe(8),
                    "code_challenge": challenge,
                    "code_challenge_method": "S256",
                }
                self._send(302, location=f"{svc.issuer}/authorize?{urlencode(params)}")
            elif parts.path == "/callback":
                verifier = svc.flows.pop(q.get("state", ""), None)
                if verifier is None or "code" not in q:
                    self._send(400, _page("Anmeldung abgebrochen", f"<p>{q.get('error', 'state')}</p>"))
                    return
                r = requests.post(
                    svc.issuer + "/token",
                    auth=(svc.client_id, svc.secret),
                    data={
                        "grant_type": "authorization_code",
                        "code": q["code"],
                        "redirect_uri": svc.redirect_uri,
                        "code_verifier": verifier,
                    },
                    timeout=10,
                )
                r.raise_for_status()
                from joserfc import jwt
                from joserfc.jwk import KeySet

                jwks = KeySet.import_key_set(requests.get(svc.issuer + "/jwks.json", timeout=10).json())
                claims = dict(jwt.decode(r.json()["id_token"], jwks).claims)
                svc.claims.append(claims)
                body = f'<p id="signed-in">Angemeldet als {claims.get("email")}</p>'
                self._send(200, _page("Stadtbücherei", body))
            else:
                self._send(404, _page("Nicht gefunden", ""))

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            if self.path == "/backchannel":
                svc.logouts.extend(parse_qs(body).get("logout_token", []))
                svc.logout_event.set()
                self._send(200)
            else:
                self._send(404)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=httpd.serve_forever, args=(SERVER_POLL_SECONDS,), daemon=True).start()
    yield svc
    httpd.shutdown()
