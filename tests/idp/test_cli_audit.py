"""`cityid audit list`: the entries a helpdesk or an investigation needs, filtered."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner

from cli import main as cli_main
from tests.idp.conftest import Browser, Idp, csrf

PASSWORD = "correct horse battery staple"


def _cli(idp: Idp, *args: str) -> Any:
    env = {"CITYID_DATABASE_URL": idp.config.database_url, "CITYID_SECRET_KEY": idp.config.secret_key}
    env |= {"CITYID_KEY_PASSPHRASE": idp.config.key_passphrase, "CITYID_ISSUER": idp.config.issuer}
    r = CliRunner().invoke(
        cli_main, ["audit", "list", *args, "--data-dir", str(idp.config.data_dir), "--json"], env=env
    )
    return r.exit_code, (json.loads(r.stdout) if r.exit_code == 0 else r.output)


def _login(idp: Idp, email: str, password: str) -> int:
    b = Browser(idp)
    page = b.get(f"{idp.url}/login")
    return b.post(
        f"{idp.url}/login", {"csrf_token": csrf(page.text), "email": email, "password": password}
    ).status_code


def test_audit_list_filters_by_account_action_outcome_and_time(idp: Idp) -> None:
    anna = idp.add_user("anna@example.org")
    idp.add_user("bert@example.org")
    assert _login(idp, "anna@example.org", "not the password") == 401
    assert _login(idp, "anna@example.org", PASSWORD) == 302
    assert _login(idp, "bert@example.org", PASSWORD) == 302

    code, rows = _cli(idp, "--party", "anna@example.org")
    assert code == 0 and rows and all(anna in (r["actor"], r["subject"]) for r in rows)
    assert [r["seq"] for r in rows] == sorted((r["seq"] for r in rows), reverse=True)  # newest first
    assert {"account.create", "login.password"} <= {r["action"] for r in rows}

    code, rows = _cli(idp, "--party", anna, "--action", "login.", "--outcome", "success")
    assert code == 0 and [r["action"] for r in rows] == ["login.password"]
    code, rows = _cli(idp, "--action", "login.password", "--limit", "1")
    assert code == 0 and len(rows) == 1 and rows[0]["subject"] != anna  # bert's, the newest
    code, rows = _cli(idp, "--since", "2999-01-01")
    assert code == 0 and rows == []
    code, rows = _cli(idp, "--since", "2999-01-01T06:00")  # the form the help and the docs show
    assert code == 0 and rows == []
    code, _ = _cli(idp, "--party", "nobody@example.org")
    assert code == 4


def test_audit_verify_prints_an_anchor_and_checks_anchors_given_back(idp: Idp) -> None:
    idp.add_user("anna@example.org")
    env = {"CITYID_DATABASE_URL": idp.config.database_url, "CITYID_SECRET_KEY": idp.config.secret_key}
    env |= {"CITYID_KEY_PASSPHRASE": idp.config.key_passphrase, "CITYID_ISSUER": idp.config.issuer}

    def verify(*args: str) -> Any:
        cmd = ["audit", "verify", *args, "--data-dir", str(idp.config.data_dir), "--json"]
        return CliRunner().invoke(cli_main, cmd, env=env)

    r = verify()
    first = json.loads(r.stdout)
    assert r.exit_code == 0 and first["ok"] and first["anchors_checked"] == 0
    anchor = f"{first['last_seq']}:{first['last_hash']}"
    assert _login(idp, "anna@example.org", PASSWORD) == 302  # the log grows past the anchor
    r = verify("--anchor", anchor)
    assert r.exit_code == 0 and json.loads(r.stdout)["anchors_checked"] == 1
    r = verify("--anchor", f"{first['last_seq']}:{'0' * 64}")  # the entry is not what was kept
    assert r.exit_code == 5 and json.loads(r.stdout)["first_bad_seq"] == first["last_seq"]
    assert verify("--anchor", "last").exit_code == 2  # usage error, nothing checked
