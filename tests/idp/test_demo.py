"""The demo relying service of `make run`: logs in through cityid with Authlib, logs out safely."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from idp.app import create_app
from idp.demo import DEMO_EMAIL, prepare_demo
from idp.instance import InstanceKeys
from tests.conftest import SERVER_POLL_SECONDS
from tests.idp.conftest import Browser, Idp, csrf, free_port, query


@pytest.fixture
def demo(db_url: str, tmp_path: Path) -> Iterator[tuple[Idp, str]]:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    data = tmp_path / "demo"
    data.mkdir()
    (data / "cityid.toml").write_text(
        f'issuer = "{issuer}"\ndatabase_url = "{db_url}"\n'
        f'secret_key = "{secrets.token_urlsafe(32)}"\nkey_passphrase = "{secrets.token_urlsafe(32)}"\n'
    )
    cfg, _info = prepare_demo(data, issuer=issuer)
    password = json.loads((data / "demo.json").read_text())["password"]
    app = create_app(cfg, demo=True)
    srv = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=srv.serve_forever, args=(SERVER_POLL_SECONDS,), daemon=True).start()
    try:
        yield Idp(url=issuer, config=cfg, app=app, keys=InstanceKeys.from_config(cfg)), password
    finally:
        srv.shutdown()
        app.extensions["cityid"].engine.dispose()


def _logged_in(idp: Idp, password: str) -> tuple[Browser, Any]:
    b = Browser(idp)
    page = b.follow(b.get(f"{idp.url}/demo/login"))
    page = b.login(DEMO_EMAIL, password, page)
    if "decision" in page.text:  # first visit: consent
        page = b.consent(page)
    home = b.follow(page)
    assert home.status_code == 200 and DEMO_EMAIL in home.text, home.text
    return b, home


def test_demo_service_logs_in_through_cityid_with_authlib(demo: tuple[Idp, str]) -> None:
    idp, password = demo
    _b, home = _logged_in(idp, password)
    assert 'action="/demo/logout"' in home.text


def test_demo_logout_requires_its_csrf_token(demo: tuple[Idp, str]) -> None:
    idp, password = demo
    b, home = _logged_in(idp, password)
    # a cross-site form post carries no token: refused, the visitor stays logged in
    r = b.post(f"{idp.url}/demo/logout", {})
    assert r.status_code == 400
    r = b.post(f"{idp.url}/demo/logout", {"csrf_token": "forged"})
    assert r.status_code == 400
    assert DEMO_EMAIL in b.get(f"{idp.url}/demo/").text
    # the page's own form logs out at cityid (RP-initiated logout with id_token_hint)
    r = b.post(f"{idp.url}/demo/logout", {"csrf_token": csrf(home.text)})
    assert r.status_code == 302 and "/logout?id_token_hint=" in r.headers["Location"]
    assert DEMO_EMAIL not in b.get(f"{idp.url}/demo/").text


def test_demo_service_uses_pkce_s256(demo: tuple[Idp, str]) -> None:
    idp, _password = demo
    start = Browser(idp).get(f"{idp.url}/demo/login")
    asked = query(start.headers["Location"])
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43


def test_demo_result_page_shows_claims_readably_with_a_way_to_my_account(demo: tuple[Idp, str]) -> None:
    import re

    idp, password = demo
    b, _home = _logged_in(idp, password)
    b.http.headers["Accept-Language"] = "en"
    page = b.get(f"{idp.url}/demo/").text
    assert f'href="{idp.url}/account"' in page  # on to "My account"
    assert "<code>auth_time</code>" in page and "Logged in at" in page
    # times as local dates with their zone, never as epoch seconds
    rows = re.findall(r'<td class="claim-value">([^<]*)</td>', page)
    assert rows and not any(re.fullmatch(r"\d{9,}", v) for v in rows)
    assert sum(bool(re.search(r"\d{4}, .* CES?T$", v)) for v in rows) == 3  # auth_time, iat, exp
