"""Insights through HTTP: two cityid instances on one database, citizens' browsers, an RP."""

from __future__ import annotations

import dataclasses
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from idp.config import InsightsConfig
from tests.idp.conftest import Browser, Idp, csrf, idp, idp_factory
from tests.stepup.conftest import Rp, post_form

__all__ = ["idp", "idp_factory"]

PASSWORD = "correct horse battery staple"
METRICS_TOKEN = "metrics-" + "x" * 32


@dataclass
class Pair:
    """Two instances ("workers") of one cityid on one database, and a relying service."""

    a: Idp
    b: Idp
    rp: Rp

    def instance(self, i: int) -> Idp:
        return self.a if i % 2 == 0 else self.b


@pytest.fixture
def pair(idp_factory: Any) -> Pair:
    shared = {
        "secret_key": secrets.token_urlsafe(32),
        "key_passphrase": secrets.token_urlsafe(32),
        "eid_connector": "simulator",
        "eid_simulator_enabled": True,
        "insights": InsightsConfig(metrics=True, metrics_token=METRICS_TOKEN),
    }
    a = idp_factory(**shared)
    b = idp_factory(**shared)
    cid, secret = a.add_client(name="Bürgeramt", redirect_uris=["http://127.0.0.1:9/cb"])
    return Pair(a, b, Rp(a, cid, secret))


def rp_at(rp: Rp, idp: Idp) -> Rp:
    return dataclasses.replace(rp, idp=idp)


def login_page(browser: Browser, url: str) -> requests.Response:
    return browser.follow(browser.get(url))


def wrong_password(browser: Browser, page: requests.Response, email: str) -> requests.Response:
    """Send a wrong password; the answer is the login page again (401)."""
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action
    target = browser.idp.url + action.group(1).replace("&amp;", "&")
    resp = browser.post(
        target, {"csrf_token": csrf(page.text), "email": email, "password": "wrong " + PASSWORD}
    )
    assert resp.status_code == 401, resp.status_code
    return resp


def write_toml(idp: Idp, path: Path) -> Path:
    """A data dir whose cityid.toml names the instance's database and secrets (for the CLI)."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = idp.config
    (path / "cityid.toml").write_text(
        f'database_url = "{cfg.database_url}"\nissuer = "{cfg.issuer}"\n'
        f'secret_key = "{cfg.secret_key}"\nkey_passphrase = "{cfg.key_passphrase}"\n',
        encoding="utf-8",
    )
    return path


__all__ += ["Browser", "Idp", "post_form"]
