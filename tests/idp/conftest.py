"""Real parts for the provider's tests: an HTTP server, an SMTP server, an RP's receiver."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from aiosmtpd.controller import Controller
from werkzeug.serving import make_server

from db import make_engine, make_session_factory, transaction
from idp.accounts import create_account
from idp.app import create_app
from idp.clients import ClientSpec, add_client
from idp.config import Config
from idp.instance import InstanceKeys
from idp.keys import ALGORITHMS, _generate, create_key
from tests.conftest import SERVER_POLL_SECONDS

# Ports for test servers come from below the kernel's ephemeral range (32768-60999 by default):
# a port from bind(0) is an ephemeral one, and between this lookup and the server's own bind an
# outgoing connection (a database or HTTP client) may be given that same port.
_TEST_PORTS = range(20000, 32768)


PASSWORD = "correct horse battery staple"  # what the tests' citizens chose


def free_port() -> int:
    """A port no one listens on now that no outgoing connection will be given meanwhile."""
    for _ in range(200):
        port = secrets.choice(_TEST_PORTS)  # random: the two xdist workers do not pick in step
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


# ----------------------------------------------------------------------------- SMTP


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.cond = threading.Condition()
        self.refused: set[str] = set()  # mailboxes that do not exist (550 at RCPT TO)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.lower() in self.refused:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import email
        from email import policy

        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()
        return "250 OK"

    def wait_for(self, to: str, timeout: float = 10.0) -> Any:
        with self.cond:
            ok = self.cond.wait_for(lambda: any(to in m["To"] for m in self.messages), timeout)
            assert ok, f"no mail to {to} arrived"
            return [m for m in self.messages if to in m["To"]][-1]


@pytest.fixture
def smtp_server() -> Iterator[tuple[_Inbox, int]]:
    inbox = _Inbox()
    port = free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    yield inbox, port
    ctl.stop()


# ----------------------------------------------------------------------------- RP receiver


@dataclass
class Receiver:
    url: str
    posts: list[dict[str, list[str]]] = field(default_factory=list)
    event: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def logout_receiver() -> Iterator[Receiver]:
    port = free_port()
    rec = Receiver(url=f"http://127.0.0.1:{port}/backchannel")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            rec.posts.append(parse_qs(body))
            rec.event.set()
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    t = threading.Thread(target=httpd.serve_forever, args=(SERVER_POLL_SECONDS,), daemon=True)
    t.start()
    yield rec
    httpd.shutdown()


# ----------------------------------------------------------------------------- the IdP


@dataclass
class Idp:
    url: str
    config: Config
    app: Any
    keys: InstanceKeys
    served_at: str = ""  # where the test server listens (plain http), when not at the issuer

    def sessions(self) -> Any:
        return self.app.extensions["cityid"].sessions

    @property
    def key_cache(self) -> Any:
        return self.app.extensions["cityid"].key_cache

    def add_client(self, **kw: Any) -> tuple[str, str | None]:
        with transaction(self.sessions()) as s:
            row, secret = add_client(s, self.keys, ClientSpec(**kw))
            return row.client_id, secret

    def add_user(self, email: str, password: str = PASSWORD, verified: bool = True) -> str:
        with transaction(self.sessions()) as s:
            return create_account(s, self.keys, email, password, verified=verified, actor="admin").id


def make_config(data_dir: Path, db_url: str, issuer: str, **over: Any) -> Config:
    cfg = Config(
        data_dir=data_dir,
        database_url=db_url,
        issuer=issuer,
        secret_key=secrets.token_urlsafe(32),
        key_passphrase=secrets.token_urlsafe(32),
    )
    return dataclasses.replace(cfg, **over)


# Token-signing keys made once per test process: the n-th instance a test starts gets the n-th
# key of each algorithm (instances of one test never share a key; each test has its own database).
# An RSA key costs ~40 ms of CPU to make; key generation itself is tested by `cityid init` and
# the rotation tests, which make their own.
_SIGNING_KEYS: list[dict[str, Any]] = []


def _signing_keys(n: int) -> dict[str, Any]:
    while len(_SIGNING_KEYS) <= n:
        _SIGNING_KEYS.append({alg: _generate(alg) for alg in ALGORITHMS})
    return _SIGNING_KEYS[n]


@pytest.fixture
def idp_factory(db_url: str, tmp_path: Path) -> Iterator[Any]:
    servers: list[Any] = []

    def start(*, host: str = "127.0.0.1", **over: Any) -> Idp:
        """``host``: the issuer's host name, e.g. ``localhost`` for WebAuthn (an IP is no RP ID)."""
        # The socket is bound now and handed to the server later: a port only looked up here
        # could be taken meanwhile (e.g. as the local port of a database connection).
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = int(listener.getsockname()[1])
        issuer = over.pop("issuer", f"http://{host}:{port}")
        cfg = make_config(tmp_path / f"data{port}", db_url, issuer, **over)
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(cfg.db_url)
        with transaction(make_session_factory(engine)) as s:
            for alg, key in _signing_keys(len(servers)).items():
                create_key(s, cfg.key_passphrase, alg, key=key)
        engine.dispose()
        app = create_app(cfg)
        srv = make_server("127.0.0.1", port, app, threaded=True, fd=listener.fileno())
        listener.close()  # the server holds its own duplicate of the socket
        threading.Thread(target=srv.serve_forever, args=(SERVER_POLL_SECONDS,), daemon=True).start()
        servers.append((srv, app))
        return Idp(
            url=cfg.issuer,
            config=cfg,
            app=app,
            keys=InstanceKeys.from_config(cfg),
            served_at=f"http://127.0.0.1:{port}",
        )

    yield start
    for srv, app in servers:
        srv.shutdown()
        app.extensions["cityid"].courier.stop()
        app.extensions["cityid"].engine.dispose()


@pytest.fixture
def idp(idp_factory: Any) -> Idp:
    return idp_factory()


# ----------------------------------------------------------------------------- a citizen's browser


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "page has no CSRF token"
    return m.group(1)


class Browser:
    """A citizen's browser without JavaScript: follows redirects inside the IdP only."""

    def __init__(self, idp: Idp) -> None:
        self.idp = idp
        self.http = requests.Session()

    def get(self, url: str, **kw: Any) -> requests.Response:
        return self.http.get(url, allow_redirects=False, timeout=10, **kw)

    def post(self, url: str, data: dict[str, str], **kw: Any) -> requests.Response:
        return self.http.post(url, data=data, allow_redirects=False, timeout=10, **kw)

    def follow(self, resp: requests.Response) -> requests.Response:
        """Follow redirects while they stay on the IdP."""
        while resp.status_code in (301, 302, 303) and resp.headers["Location"]:
            loc = resp.headers["Location"]
            if loc.startswith("/"):
                loc = self.idp.url + loc
            if not loc.startswith(self.idp.url):
                return resp
            resp = self.get(loc)
        return resp

    def login(self, email: str, password: str, page: requests.Response) -> requests.Response:
        """Fill the login form on `page` and follow where it leads."""
        assert page.status_code == 200 and "password" in page.text
        action = re.search(r'<form method="post" action="([^"]+)"', page.text)
        assert action
        target = self.idp.url + action.group(1).replace("&amp;", "&")
        return self.follow(
            self.post(target, {"csrf_token": csrf(page.text), "email": email, "password": password})
        )

    def confirm_link(self, link: str, password: str = PASSWORD) -> requests.Response:
        """Open a link from a mail (its page has a button) and press the button, with
        ``password`` where the page asks for one (an address is confirmed with it)."""
        page = self.get(link)
        if page.status_code != 200 or 'name="token"' not in page.text:
            return page
        action = re.search(r'<form method="post" action="([^"]+)"', page.text)
        token = re.search(r'name="token" value="([^"]+)"', page.text)
        assert action and token, page.text
        form = {"csrf_token": csrf(page.text), "token": token.group(1)}
        if 'name="password"' in page.text:
            form["password"] = password
        return self.post(self.idp.url + action.group(1), form)

    def consent(self, page: requests.Response, decision: str = "allow") -> requests.Response:
        assert page.status_code == 200, page.text
        action = re.search(r'<form method="post" action="([^"]+)"', page.text)
        assert action
        target = self.idp.url + action.group(1).replace("&amp;", "&")
        return self.follow(self.post(target, {"csrf_token": csrf(page.text), "decision": decision}))


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return verifier, challenge.decode()


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def jdump(x: Any) -> str:
    return json.dumps(x, indent=2)
