"""PKCE (S256) for every client, confidential ones included (RFC 9700 §2.1.1, OAuth 2.1 §4.1.1);
``--allow-missing-pkce`` lets a legacy confidential client go without, and says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import func, select

from cli import main
from db import transaction
from idp.clients import ClientError, ClientSpec, validate_spec
from idp.models import AuthorizationCode
from tests.idp.conftest import PASSWORD, Browser, Idp, pkce_pair, query

REDIRECT = "http://127.0.0.1:9/cb"


def _authorize(idp: Idp, b: Browser, cid: str, **extra: str) -> requests.Response:
    params = {"response_type": "code", "client_id": cid, "redirect_uri": REDIRECT, "scope": "openid"}
    r = b.follow(b.get(f"{idp.url}/authorize", params=params | extra))
    if r.status_code == 200 and 'name="password"' in r.text:
        r = b.login("eve@example.org", PASSWORD, r)
    if r.status_code == 200 and 'name="decision"' in r.text:
        r = b.consent(r)
    return r


def _codes(idp: Idp) -> int:
    with transaction(idp.sessions()) as s:
        return int(s.execute(select(func.count()).select_from(AuthorizationCode)).scalar_one())


def _cli(idp: Idp, *args: str) -> Any:
    env = {
        "CITYID_DATABASE_URL": idp.config.database_url,
        "CITYID_SECRET_KEY": idp.config.secret_key,
        "CITYID_KEY_PASSPHRASE": idp.config.key_passphrase,
    }
    return CliRunner().invoke(main, [*args, "--data-dir", str(Path(idp.config.data_dir))], env=env)


def test_a_confidential_client_without_pkce_is_refused_rfc9700_2_1_1(idp: Idp) -> None:
    idp.add_user("eve@example.org")
    cid, _secret = idp.add_client(name="Bauamt", redirect_uris=[REDIRECT])
    r = _authorize(idp, Browser(idp), cid)
    assert "code" not in query(r.headers.get("Location", "")), r.text
    assert "code_challenge" in r.text or "PKCE" in query(r.headers.get("Location", "")).get(
        "error_description", ""
    )
    assert _codes(idp) == 0


def test_a_confidential_client_with_pkce_gets_its_tokens(idp: Idp) -> None:
    idp.add_user("eve@example.org")
    cid, secret = idp.add_client(name="Bauamt", redirect_uris=[REDIRECT])
    verifier, challenge = pkce_pair()
    r = _authorize(idp, Browser(idp), cid, code_challenge=challenge, code_challenge_method="S256")
    code = query(r.headers["Location"])["code"]
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    missing = requests.post(f"{idp.url}/token", auth=(cid, secret or ""), data=data, timeout=10)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"  # RFC 7636 §4.6
    tok = requests.post(
        f"{idp.url}/token", auth=(cid, secret or ""), data=data | {"code_verifier": verifier}, timeout=10
    )
    assert tok.status_code == 200, tok.text


def test_a_legacy_confidential_client_may_be_let_off_pkce(idp: Idp) -> None:
    idp.add_user("eve@example.org")
    cid, secret = idp.add_client(name="Altverfahren", redirect_uris=[REDIRECT], allow_missing_pkce=True)
    r = _authorize(idp, Browser(idp), cid)
    code = query(r.headers["Location"])["code"]
    tok = requests.post(
        f"{idp.url}/token",
        auth=(cid, secret or ""),
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
        timeout=10,
    )
    assert tok.status_code == 200, tok.text


@pytest.mark.parametrize(
    "spec",
    [
        ClientSpec(name="App", auth_method="none", redirect_uris=[REDIRECT], allow_missing_pkce=True),
        ClientSpec(
            name="Fapi",
            auth_method="private_key_jwt",
            jwks={"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}]},
            redirect_uris=[REDIRECT],
            profile="fapi2",
            allow_missing_pkce=True,
        ),
    ],
)
def test_public_and_fapi2_clients_cannot_be_let_off_pkce(spec: ClientSpec) -> None:
    with pytest.raises(ClientError, match="PKCE"):
        validate_spec(spec)


def test_cli_sets_and_shows_allow_missing_pkce(idp: Idp) -> None:
    res = _cli(
        idp,
        "client",
        "add",
        "--name",
        "Altverfahren",
        "--redirect-uri",
        REDIRECT,
        "--allow-missing-pkce",
        "--json",
    )
    assert res.exit_code == 0, res.output
    cid = json.loads(res.output)["client_id"]
    assert json.loads(res.output)["allow_missing_pkce"] is True
    listed = _cli(idp, "client", "list")
    assert f"{cid}  Altverfahren  [pkce-optional]" in listed.output
    listed_json = {c["client_id"]: c for c in json.loads(_cli(idp, "client", "list", "--json").output)}
    assert listed_json[cid]["allow_missing_pkce"] is True and listed_json[cid]["profile"] is None

    res = _cli(idp, "client", "update", cid, "--require-pkce", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["allow_missing_pkce"] is False, res.output
    assert "pkce-optional" not in _cli(idp, "client", "list").output

    public = _cli(
        idp, "client", "add", "--name", "App", "--auth-method", "none", "--redirect-uri", REDIRECT, "--json"
    )
    pid = json.loads(public.output)["client_id"]
    refused = _cli(idp, "client", "update", pid, "--allow-missing-pkce", "--json")
    assert refused.exit_code == 2 and "PKCE" in json.loads(refused.output)["error"]
