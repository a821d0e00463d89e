"""The status list fetch over real HTTP (idp.eid.wallet.connector.http_fetch)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from idp.eid.wallet.connector import http_fetch
from tests.conftest import SERVER_POLL_SECONDS

BODY = b"eyJ0eXAiOiJzdGF0dXNsaXN0K2p3dCJ9.e30.sig"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/list")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/statuslist+jwt")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(SERVER_POLL_SECONDS,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_status_list_fetch_does_not_follow_redirects(server: str) -> None:
    """Review finding: the status list URI is the one in the signed credential; a redirect
    (possibly to an internal address) is a failure to get the status, hence a refusal."""
    fetch = http_fetch(requests.get)
    assert fetch(f"{server}/list") == BODY  # the direct URI works
    with pytest.raises(ValueError, match="HTTP 302"):
        fetch(f"{server}/moved")
