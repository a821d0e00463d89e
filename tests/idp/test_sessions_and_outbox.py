"""Session cookies, the back-channel logout outbox's retries, disabling an account, the
background duty's purge."""

from __future__ import annotations

import datetime as dt
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
from click.testing import CliRunner
from sqlalchemy import func, select, update

from cli import main as cli_main
from db import transaction, utcnow
from idp.models import Client, LogoutOutbox, SeenJti
from idp.oauth.backchannel import deliver_due
from idp.serve import purge_expired
from smartcard.models import SeenProof
from tests.conftest import SERVER_POLL_SECONDS
from tests.idp.conftest import Browser, Idp, Receiver, csrf, free_port

PASSWORD = "correct horse battery staple"


def test_session_cookie_is_httponly_samesite_lax_and_rotated_at_login(idp: Idp) -> None:
    idp.add_user("ida@example.org")
    b = Browser(idp)
    page = b.get(f"{idp.url}/login")
    before = b.http.cookies.get("cityid")
    assert "HttpOnly" in page.headers["Set-Cookie"] and "SameSite=Lax" in page.headers["Set-Cookie"]
    r = b.post(
        f"{idp.url}/login", {"csrf_token": csrf(page.text), "email": "ida@example.org", "password": PASSWORD}
    )
    assert r.status_code == 302
    assert b.http.cookies.get("cityid") != before  # OWASP: new session id at login
    # loopback http in development: not Secure; https issuers get Secure + __Host- prefix
    assert "Secure" not in r.headers["Set-Cookie"]


def test_https_issuer_sets_secure_host_cookie_and_hsts(idp_factory: Any) -> None:
    # The issuer (the public URL behind the TLS proxy) decides cookie and header policy.
    idp = idp_factory(issuer="https://login.example.org")
    r = idp.app.test_client().get("/login", base_url="https://login.example.org")
    assert r.headers["Strict-Transport-Security"].startswith("max-age=")
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("__Host-cityid=") and "Secure" in cookie and "Path=/" in cookie


class _Flaky(BaseHTTPRequestHandler):
    fails_left = 1
    received: list[bytes] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if _Flaky.fails_left > 0:
            _Flaky.fails_left -= 1
            self.send_response(503)
        else:
            _Flaky.received.append(body)
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_backchannel_logout_is_retried_until_delivered(idp: Idp) -> None:
    _Flaky.fails_left, _Flaky.received = 1, []  # fresh per test (and per backend)
    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), _Flaky)
    threading.Thread(target=httpd.serve_forever, args=(SERVER_POLL_SECONDS,), daemon=True).start()
    try:
        with transaction(idp.sessions()) as s:
            s.add(
                LogoutOutbox(
                    client_id="c",
                    url=f"http://127.0.0.1:{port}/bc",
                    logout_token="tok",
                    next_attempt_at=dt.datetime.now(dt.UTC),
                )
            )
        assert deliver_due(idp.sessions(), idp.key_cache) == 0  # 503: kept for later
        with idp.sessions()() as s:
            row = s.execute(select(LogoutOutbox)).scalar_one()
            assert row.attempts == 1 and row.last_error == "HTTP 503" and row.delivered_at is None
            assert row.next_attempt_at > dt.datetime.now(dt.UTC)
        assert deliver_due(idp.sessions(), idp.key_cache) == 0  # not due yet: back-off
        with transaction(idp.sessions()) as s:
            s.execute(update(LogoutOutbox).values(next_attempt_at=dt.datetime.now(dt.UTC)))
        assert deliver_due(idp.sessions(), idp.key_cache) == 1
        assert _Flaky.received == [b"logout_token=tok"]
    finally:
        httpd.shutdown()


def test_a_retried_logout_token_is_signed_anew_so_it_has_not_expired_backchannel_2_6(
    idp: Idp, logout_receiver: Receiver
) -> None:
    from joserfc import jwt as jose_jwt

    from idp.oauth.backchannel import logout_token

    cid, _ = idp.add_client(name="Svc", redirect_uris=["https://svc.example/cb"])
    with transaction(idp.sessions()) as s:
        client = s.get(Client, cid)
        queued = logout_token(s, idp.key_cache, issuer=idp.url, client=client, sub="sub-1", sid="sid-1")
        s.add(
            LogoutOutbox(
                client_id=cid, url=logout_receiver.url, logout_token=queued, next_attempt_at=utcnow()
            )
        )
    old = jose_jwt.decode(queued, idp.key_cache.get(idp.sessions()()).verify_set).claims
    time.sleep(1.1)  # the retry comes later (in production: minutes to an hour)
    assert deliver_due(idp.sessions(), idp.key_cache) == 1
    sent = logout_receiver.posts[0]["logout_token"][0]
    new = jose_jwt.decode(sent, idp.key_cache.get(idp.sessions()()).verify_set)
    assert new.header["typ"] == "logout+jwt"
    assert new.claims["exp"] > old["exp"] and new.claims["iat"] > old["iat"]
    assert {k: new.claims[k] for k in ("iss", "aud", "jti", "sub", "sid", "events")} == {
        k: old[k] for k in ("iss", "aud", "jti", "sub", "sid", "events")
    }


def test_disabled_account_cannot_log_in_its_services_are_told_and_enabling_lets_it_back(idp: Idp) -> None:
    from tests.idp.conftest import pkce_pair
    from tests.idp.test_bad_input import REDIRECT, get_code, token

    cid, secret = idp.add_client(
        name="Svc", redirect_uris=[REDIRECT], backchannel_logout_uri="http://127.0.0.1:9/bcl"
    )
    idp.add_user("eve@example.org")
    verifier, ch = pkce_pair()
    code = get_code(idp, cid, Browser(idp), ch)
    tok = token(idp, cid, secret or "", code=code, code_verifier=verifier).json()
    runner = CliRunner()
    env = {"CITYID_DATABASE_URL": idp.config.database_url, "CITYID_SECRET_KEY": idp.config.secret_key}
    env |= {"CITYID_KEY_PASSPHRASE": idp.config.key_passphrase, "CITYID_ISSUER": idp.config.issuer}
    data_dir = ["--data-dir", str(idp.config.data_dir)]
    r = runner.invoke(cli_main, ["user", "disable", "eve@example.org", *data_dir, "--json"], env=env)
    assert r.exit_code == 0, r.output
    with transaction(idp.sessions()) as s:
        assert s.scalar(select(func.count()).select_from(LogoutOutbox)) == 1  # the service is told
        assert s.get(Client, cid) is not None
    r2 = requests.get(
        f"{idp.url}/userinfo", headers={"Authorization": f"Bearer {tok['access_token']}"}, timeout=10
    )
    assert r2.status_code == 401

    def login() -> int:
        b = Browser(idp)
        page = b.get(f"{idp.url}/login")
        form = {"csrf_token": csrf(page.text), "email": "eve@example.org", "password": PASSWORD}
        return b.post(f"{idp.url}/login", form).status_code

    assert login() == 401
    r = runner.invoke(cli_main, ["user", "enable", "eve@example.org", *data_dir, "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert login() == 302
    r = runner.invoke(cli_main, ["user", "enable", "nobody@example.org", *data_dir, "--json"], env=env)
    assert r.exit_code == 4


def test_the_background_duty_purges_expired_replay_caches_and_keeps_live_entries(idp: Idp) -> None:
    now = utcnow()
    with transaction(idp.sessions()) as s:
        for model in (SeenJti, SeenProof):
            s.add(model(key="old", expires_at=now - dt.timedelta(seconds=1)))
            s.add(model(key="live", expires_at=now + dt.timedelta(minutes=5)))
    with transaction(idp.sessions()) as s:
        purge_expired(s, now)
    with transaction(idp.sessions()) as s:
        for model in (SeenJti, SeenProof):
            assert list(s.scalars(select(model.key))) == ["live"], model.__name__


def test_links_codes_tokens_revoked_grants_and_sent_logouts_are_purged_a_day_after_their_end_gdpr_5_1_e(
    idp: Idp,
) -> None:
    from idp.models import AuthorizationCode, EmailToken, Grant, RefreshToken

    cid, _secret = idp.add_client(name="Svc", redirect_uris=["http://127.0.0.1:9/cb"])
    account_id = idp.add_user("paula@example.org")
    now = utcnow()
    gone, kept = now - dt.timedelta(days=2), now + dt.timedelta(days=1)
    with transaction(idp.sessions()) as s:
        for name, revoked in (("old", gone), ("live", None)):
            grant = Grant(id=name, client_id=cid, account_id=account_id, scope="openid", revoked_at=revoked)
            s.add(grant)
        s.flush()
        for name, at in (("old", gone), ("live", kept)):
            s.add(EmailToken(token_digest=name, account_id=account_id, purpose="verify", expires_at=at))
            s.add(
                AuthorizationCode(
                    code_digest=name,
                    grant_id="live",
                    client_id=cid,
                    redirect_uri="x",
                    scope="",
                    expires_at=at,
                )
            )
            s.add(RefreshToken(token_digest=name, grant_id="live", scope="", expires_at=at))
        s.add(
            LogoutOutbox(
                id="old", client_id=cid, url="x", logout_token="t", next_attempt_at=gone, delivered_at=gone
            )
        )
        s.add(LogoutOutbox(id="live", client_id=cid, url="x", logout_token="t", next_attempt_at=now))
    with transaction(idp.sessions()) as s:
        purge_expired(s, now)
    with transaction(idp.sessions()) as s:
        assert list(s.scalars(select(Grant.id))) == ["live"]
        assert list(s.scalars(select(EmailToken.token_digest))) == ["live"]
        assert list(s.scalars(select(AuthorizationCode.code_digest))) == ["live"]
        assert list(s.scalars(select(RefreshToken.token_digest))) == ["live"]
        assert list(s.scalars(select(LogoutOutbox.id))) == ["live"]


def test_a_service_that_trickles_its_answer_holds_a_logout_delivery_no_longer_than_the_deadline(
    monkeypatch: Any,
) -> None:
    """Back-Channel Logout §2.5 delivery from the one background thread: a slow or hostile
    endpoint (a byte every half second, well within the socket timeout) must not hold it, nor
    may a huge answer be read into memory."""
    import socket
    import threading
    import time

    from idp.oauth import backchannel

    monkeypatch.setattr(backchannel, "DEADLINE", 1.0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def trickle() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        try:
            for _ in range(60):  # 30 s of "HTTP/1.1 200 ..." a byte at a time
                conn.send(b"H")
                time.sleep(0.5)
        except OSError:
            pass
        finally:
            conn.close()

    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    error = backchannel.post_logout_token(f"http://127.0.0.1:{port}/bcl", "token")
    assert error == "deadline passed" and time.monotonic() - started < 10
    listener.close()
