"""GDPR rights on the account page: export (Art. 15/20) and erasure (Art. 17)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import func, select

from db import audit, transaction
from db.audit import AuditEvent
from idp import privacy
from idp.models import Account, Consent, Grant, LoginSession, LogoutOutbox
from idp.oauth.backchannel import EVENT, deliver_due
from tests.idp.conftest import Browser, Idp, Receiver, csrf
from tests.pages.helpers import PASSWORD, init_ca, logged_in, sign_in_to_service

REDIRECT = "http://127.0.0.1:9/cb"


def count(idp: Idp, model: Any, *where: Any) -> int:
    with transaction(idp.sessions()) as s:
        return int(s.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


def test_export_holds_account_consents_grants_sessions_audit_and_hook_sections(idp: Idp) -> None:
    cid, secret = idp.add_client(name="Stadtbücherei", redirect_uris=[REDIRECT])
    acct = idp.add_user("jonas@example.org")
    b, page = logged_in(idp, "jonas@example.org")
    sign_in_to_service(idp, b, cid, secret, REDIRECT, "jonas@example.org")

    def devices(session: Any, keys: Any, account_id: str) -> dict[str, Any]:
        return {"example_package": [{"account": account_id, "name": "Telefon"}]}

    privacy.EXPORT_HOOKS.append(devices)
    try:
        page = b.get(idp.url + "/account").text
        r = b.post(idp.url + "/account/export", {"csrf_token": csrf(page)})
    finally:
        privacy.EXPORT_HOOKS.remove(devices)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["Content-Disposition"].startswith("attachment;")
    assert r.headers["Cache-Control"] == "no-store"
    data = r.json()
    assert data["format"] == "cityid-export/1"
    assert data["account"]["id"] == acct and data["account"]["email"] == "jonas@example.org"
    assert data["consents"][0]["service"] == "Stadtbücherei"
    assert data["grants"][0]["client_id"] == cid and data["grants"][0]["amr"] == ["pwd"]
    assert data["sessions"] and data["sessions"][0]["factors"] == ["pwd"]
    actions = {e["action"] for e in data["audit"]}
    assert {"account.create", "login.password", "consent.grant", "authorize.code"} <= actions
    assert data["example_package"] == [{"account": acct, "name": "Telefon"}]
    text = json.dumps(data)
    assert "password_hash" not in text and "argon2" not in text and "csrf" not in text
    # the download itself is in the log
    assert "data.export" in {
        e["action"] for e in b.post(idp.url + "/account/export", {"csrf_token": csrf(page)}).json()["audit"]
    }


def test_export_needs_login_and_a_csrf_token(idp: Idp) -> None:
    idp.add_user("ida@example.org")
    b = Browser(idp)
    r = b.post(idp.url + "/account/export", {"csrf_token": csrf(b.get(idp.url + "/login").text)})
    assert r.status_code == 303 and r.headers["Location"] == "/login"
    b, _page = logged_in(idp, "ida@example.org")
    r = b.post(idp.url + "/account/export", {})
    assert r.status_code == 400 and "application/json" not in r.headers["Content-Type"]


def test_deletion_revokes_tokens_notifies_services_erases_data_and_pseudonymises_the_log(
    idp: Idp, logout_receiver: Receiver
) -> None:
    cid, secret = idp.add_client(
        name="Stadtbücherei", redirect_uris=[REDIRECT], backchannel_logout_uri=logout_receiver.url
    )
    init_ca(idp)
    acct = idp.add_user("karl@example.org")
    other = idp.add_user("erika@example.org")
    b, _ = logged_in(idp, "karl@example.org")
    token = sign_in_to_service(idp, b, cid, secret, REDIRECT, "karl@example.org")
    second, _ = logged_in(idp, "karl@example.org")  # a second browser (phone) is logged out too
    logged_in(idp, "erika@example.org")
    jwks = KeySet.import_key_set(requests.get(idp.url + "/jwks.json", timeout=10).json())
    sub = jwt.decode(token["id_token"], jwks).claims["sub"]

    removed: list[str] = []

    def revoke_devices(session: Any, account_id: str) -> None:
        removed.append(account_id)

    page = b.get(idp.url + "/account/delete").text
    assert 'name="password"' in page and 'name="confirm"' in page
    privacy.DELETE_HOOKS.append(revoke_devices)
    try:
        r = b.post(
            idp.url + "/account/delete", {"csrf_token": csrf(page), "password": PASSWORD, "confirm": "yes"}
        )
    finally:
        privacy.DELETE_HOOKS.remove(revoke_devices)
    assert r.status_code == 200 and "Ihr Konto wurde gelöscht" in r.text
    assert removed == [acct]

    # personal data gone; the other citizen untouched
    assert count(idp, Account, Account.id == acct) == 0
    for model in (Consent, Grant, LoginSession):
        assert count(idp, model, model.account_id == acct) == 0
    assert count(idp, Account, Account.id == other) == 1
    assert count(idp, LoginSession, LoginSession.account_id == other) == 1
    # the audit log no longer names the account, and the chain still verifies
    assert count(idp, AuditEvent, (AuditEvent.actor == acct) | (AuditEvent.subject == acct)) == 0
    with transaction(idp.sessions()) as s:
        assert audit.verify(s).ok
        last = s.execute(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).scalar_one()
        assert last.action == "account.delete" and last.actor.startswith("erased:")
        mine = s.execute(
            select(AuditEvent.action).where(
                (AuditEvent.actor == last.actor) | (AuditEvent.subject == last.actor)
            )
        ).scalars()
        assert {"account.create", "login.password", "consent.grant"} <= set(mine)

    # tokens are dead
    intro = requests.post(
        idp.url + "/introspect", auth=(cid, secret), data={"token": token["access_token"]}, timeout=10
    ).json()
    assert intro["active"] is False
    refreshed = requests.post(
        idp.url + "/token",
        auth=(cid, secret),
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
        timeout=10,
    )
    assert refreshed.status_code == 400
    # the service hears of it by back-channel logout (OIDC Back-Channel Logout §2.5)
    assert count(idp, LogoutOutbox) >= 1
    assert deliver_due(idp.sessions(), idp.key_cache) >= 1
    assert logout_receiver.event.wait(5)
    claims = jwt.decode(logout_receiver.posts[0]["logout_token"][0], jwks).claims
    assert claims["sub"] == sub and EVENT in claims["events"]
    # both browsers are logged out, and the password no longer works
    assert b.get(idp.url + "/account").headers["Location"] == "/login"
    assert second.get(idp.url + "/account").headers["Location"] == "/login"
    fresh = Browser(idp)
    r = fresh.login("karl@example.org", PASSWORD, fresh.get(idp.url + "/login"))
    assert r.status_code == 401


def test_deletion_refused_with_wrong_password_missing_tick_or_csrf_changes_nothing(idp: Idp) -> None:
    acct = idp.add_user("paul@example.org")
    b, _ = logged_in(idp, "paul@example.org")
    page = b.get(idp.url + "/account/delete").text
    token = csrf(page)
    cases = [
        ({"csrf_token": token, "password": "wrong password!", "confirm": "yes"}, 401, "Passwort ist falsch"),
        ({"csrf_token": token, "password": PASSWORD}, 400, "Kästchen"),
        ({"csrf_token": token, "password": "x" * 5000, "confirm": "yes"}, 400, "zu lang"),
        ({"password": PASSWORD, "confirm": "yes"}, 400, "Formular ist abgelaufen"),
    ]
    for form, status, text in cases:
        r = b.post(idp.url + "/account/delete", form)
        assert r.status_code == status and text in r.text, (form, r.status_code)
    assert count(idp, Account, Account.id == acct) == 1
    assert b.get(idp.url + "/account").status_code == 200
    with transaction(idp.sessions()) as s:
        refused = (
            s.execute(
                select(AuditEvent).where(AuditEvent.action == "account.delete", AuditEvent.actor == acct)
            )
            .scalars()
            .all()
        )
        assert [e.outcome for e in refused] == ["denied"]


def test_deletion_password_guesses_are_throttled_like_logins_nist_800_63b_5_2_2(idp: Idp) -> None:
    acct = idp.add_user("gerda@example.org")
    b, _ = logged_in(idp, "gerda@example.org")

    def attempt(password: str) -> int:
        page = b.get(idp.url + "/account/delete").text
        form = {"csrf_token": csrf(page), "password": password, "confirm": "yes"}
        return b.post(idp.url + "/account/delete", form).status_code

    assert [attempt("a wrong guess") for _ in range(6)] == [401] * 5 + [429]
    assert attempt(PASSWORD) == 429  # while held, not even the right password is checked
    assert count(idp, Account, Account.id == acct) == 1
    with idp.sessions()() as s:
        reasons = list(s.scalars(select(AuditEvent.reason).where(AuditEvent.action == "account.delete")))
    assert reasons.count("wrong password") == 5 and reasons.count("throttled") == 2


def test_an_administrator_exports_and_erases_an_account_on_request_gdpr_12_15_17(
    idp: Idp, tmp_path: Path
) -> None:
    """A citizen who cannot log in (disabled, lost access) asks by letter: the city's admin
    exports and erases the account with the same code as the citizen's own pages."""
    from click.testing import CliRunner

    from cli import main as cli_main
    from db import audit
    from idp.models import Account

    account_id = idp.add_user("lena@example.org")
    env = {"CITYID_DATABASE_URL": idp.config.database_url, "CITYID_SECRET_KEY": idp.config.secret_key}
    env |= {"CITYID_KEY_PASSPHRASE": idp.config.key_passphrase, "CITYID_ISSUER": idp.config.issuer}
    data_dir = ["--data-dir", str(idp.config.data_dir)]
    runner = CliRunner()
    out = tmp_path / "lena.json"
    r = runner.invoke(cli_main, ["user", "export", "lena@example.org", "--out", str(out), *data_dir], env=env)
    assert r.exit_code == 0, r.output
    exported = json.loads(out.read_text())
    assert exported["account"]["email"] == "lena@example.org" and oct(out.stat().st_mode)[-3:] == "600"
    r = runner.invoke(cli_main, ["user", "delete", "lena@example.org", *data_dir, "--json"], env=env)
    assert r.exit_code == 2  # not without --yes
    r = runner.invoke(cli_main, ["user", "delete", "lena@example.org", "--yes", *data_dir, "--json"], env=env)
    assert r.exit_code == 0, r.output
    pseudonym = json.loads(r.output)["erased"]
    with idp.sessions()() as s:
        assert s.get(Account, account_id) is None
        assert audit.verify(s).ok
        rows = (
            s.execute(select(audit.AuditEvent).where(audit.AuditEvent.subject == pseudonym)).scalars().all()
        )
        assert "account.delete" in {e.action for e in rows}
    r = runner.invoke(cli_main, ["user", "export", "lena@example.org", *data_dir], env=env)
    assert r.exit_code == 4


def test_an_export_that_cannot_be_written_is_not_recorded_as_done_and_leaves_files_alone(
    idp: Idp, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from cli import main as cli_main
    from db import audit

    idp.add_user("lena@example.org")
    env = {"CITYID_DATABASE_URL": idp.config.database_url, "CITYID_SECRET_KEY": idp.config.secret_key}
    env |= {"CITYID_KEY_PASSPHRASE": idp.config.key_passphrase, "CITYID_ISSUER": idp.config.issuer}

    def export(who: str, out: Path) -> Any:
        args = ["user", "export", who, "--out", str(out), "--data-dir", str(idp.config.data_dir)]
        return CliRunner().invoke(cli_main, args, env=env)

    exports = tmp_path / "exports"
    exports.mkdir()
    kept = exports / "case-17.json"
    kept.write_text("an earlier export")
    for who, out in (
        ("lena@example.org", exports / "no-such-dir" / "lena.json"),
        ("nobdy@example.org", kept),  # a mistyped address: the earlier export stays
    ):
        r = export(who, out)
        assert r.exit_code in (2, 4) and "Traceback" not in r.output, (who, out, r.output)
    assert kept.read_text() == "an earlier export" and sorted(p.name for p in exports.iterdir()) == [
        kept.name
    ]
    with idp.sessions()() as s:
        assert audit.entries(s, action_prefix="data.export") == []
    planted = exports / "planted.json"
    planted.symlink_to(exports / "elsewhere.json")  # personal data is never written through a link
    assert export("lena@example.org", planted).exit_code == 0
    assert not planted.is_symlink() and not (exports / "elsewhere.json").exists()
    assert oct(planted.stat().st_mode)[-3:] == "600" and "lena@example.org" in planted.read_text()


def test_client_registration_refuses_odd_ids_scopes_and_key_files_by_name(idp: Idp, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cli import main as cli_main

    env = {"CITYID_DATABASE_URL": idp.config.database_url, "CITYID_SECRET_KEY": idp.config.secret_key}
    env |= {"CITYID_KEY_PASSPHRASE": idp.config.key_passphrase, "CITYID_ISSUER": idp.config.issuer}
    base = ["client", "add", "--name", "Svc", "--redirect-uri", "https://svc.example.de/cb"]
    base += ["--data-dir", str(idp.config.data_dir), "--json"]
    bad_jwks = tmp_path / "keys.json"
    bad_jwks.write_text("{not json")
    for extra in (
        ["--client-id", "a\nb"],  # would print a forged line in `client list` and the audit log
        ["--scope-level", "=high"],
        ["--auth-method", "private_key_jwt", "--jwks-file", str(bad_jwks)],
    ):
        r = CliRunner().invoke(cli_main, [*base, *extra], env=env)
        assert r.exit_code == 2 and "error" in json.loads(r.stdout), (extra, r.output)
    # a URN as client_id is fine (RFC 6749 §A.1); a level for a scope that never matches is not
    r = CliRunner().invoke(cli_main, [*base, "--client-id", "urn:musterstadt:app"], env=env)
    assert r.exit_code == 0, r.output
    update = ["client", "update", "urn:musterstadt:app", "--data-dir", str(idp.config.data_dir), "--json"]
    r = CliRunner().invoke(cli_main, [*update, "--scope-level", "pay ment=substantial"], env=env)
    assert r.exit_code == 2 and "scope" in json.loads(r.stdout)["error"], r.output
