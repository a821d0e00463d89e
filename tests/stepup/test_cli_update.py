"""``cityid client update``: per-client minimum level and per-scope levels, then enforced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import select

from cli import main
from db import transaction
from db.audit import AuditEvent
from idp.config import LEVEL_HIGH, LEVEL_SUBSTANTIAL
from tests.idp.conftest import Browser, Idp, query
from tests.stepup.conftest import Rp, walk


def _cli(idp: Idp, *args: str) -> Any:
    env = {
        "CITYID_DATABASE_URL": idp.config.database_url,
        "CITYID_SECRET_KEY": idp.config.secret_key,
        "CITYID_KEY_PASSPHRASE": idp.config.key_passphrase,
    }
    return CliRunner().invoke(main, [*args, "--data-dir", str(Path(idp.config.data_dir)), "--json"], env=env)


def test_client_update_sets_levels_that_authorize_enforces(idp: Idp) -> None:
    idp.add_user("anna@example.org")
    cid, secret = idp.add_client(
        name="Bauamt", redirect_uris=["http://127.0.0.1:9/cb"], scope="openid permits"
    )
    res = _cli(idp, "client", "update", cid, "--min-level", "substantial", "--scope-level", "permits=high")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["min_level"] == LEVEL_SUBSTANTIAL and data["scope_levels"] == {"permits": LEVEL_HIGH}

    # No eID, no device: substantial cannot be reached, so the service's login is refused.
    rp = Rp(idp, cid, secret)
    browser = Browser(idp)
    url, _v, _s = rp.authorize_url()
    steps, page = walk(browser, browser.follow(browser.get(url)), "anna@example.org")
    assert steps == ["/login"]
    assert query(page.headers["Location"])["error"] == "unmet_authentication_requirements"

    res = _cli(idp, "client", "update", cid, "--min-level", "none")
    assert res.exit_code == 0 and json.loads(res.output)["min_level"] is None
    assert json.loads(res.output)["scope_levels"] == {"permits": LEVEL_HIGH}  # left as it was
    url, _v, _s = rp.authorize_url()
    steps, page = walk(browser, browser.follow(browser.get(url)), "anna@example.org")
    assert "code" in query(page.headers["Location"])

    bad = _cli(idp, "client", "update", cid, "--scope-level", "permits=ultra")
    assert bad.exit_code == 2 and "error" in json.loads(bad.output)
    missing = _cli(idp, "client", "update", "nope", "--min-level", "high")
    assert missing.exit_code == 4
    with transaction(idp.sessions()) as s:
        assert (
            len(list(s.execute(select(AuditEvent).where(AuditEvent.action == "client.update")).scalars()))
            == 2
        )
