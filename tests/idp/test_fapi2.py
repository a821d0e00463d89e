"""The FAPI 2.0 Security Profile per client (``--profile fapi2``): each requirement cityid enforces
for such a client, and that a client breaking it is refused (docs/fapi2.md lists them)."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from sqlalchemy import func, select

from cli import main
from db import transaction, utcnow
from idp.clients import ClientError, ClientSpec, validate_spec
from idp.models import AuthorizationCode, PushedRequest
from tests.idp.conftest import PASSWORD, Browser, Idp, pkce_pair, query
from tests.idp.dpop_client import DpopKey

REDIRECT = "http://127.0.0.1:9/cb"
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class Fapi2Client:
    """A FAPI 2.0 client: private_key_jwt, PAR, PKCE, DPoP."""

    def __init__(self, idp: Idp, **spec: Any) -> None:
        self.idp = idp
        self.key = ECKey.generate_key("P-256", private=True, parameters={"kid": "k1"})
        jwks = {"keys": [self.key.as_dict(private=False) | {"kid": "k1"}]}
        self.cid, _ = idp.add_client(
            name="Kasse",
            redirect_uris=[REDIRECT],
            auth_method="private_key_jwt",
            jwks=jwks,
            profile="fapi2",
            grant_types=["authorization_code", "refresh_token", "client_credentials"],
            **spec,
        )
        self.dpop = DpopKey()

    def auth(self, aud: str | None = None) -> dict[str, str]:
        now = int(time.time())
        claims = {
            "iss": self.cid,
            "sub": self.cid,
            "aud": aud or self.idp.url,  # FAPI 2.0 §5.3.2.1: the issuer, as one string
            "iat": now,
            "exp": now + 60,
            "jti": secrets.token_urlsafe(16),
        }
        assertion = jwt.encode({"alg": "ES256", "kid": "k1"}, claims, self.key)
        return {"client_assertion": assertion, "client_assertion_type": ASSERTION}

    def post(self, path: str, data: dict[str, str], *, dpop: DpopKey | None = None) -> requests.Response:
        def once() -> requests.Response:
            headers = {"DPoP": dpop.proof("POST", f"{self.idp.url}{path}")} if dpop else {}
            return requests.post(
                f"{self.idp.url}{path}", data=data | self.auth(), headers=headers, timeout=10
            )

        r = once()
        if dpop is not None and r.status_code == 400 and r.json().get("error") == "use_dpop_nonce":
            dpop.nonce = r.headers["DPoP-Nonce"]  # RFC 9449 §8
            r = once()
        return r

    def params(self, challenge: str | None, **over: str) -> dict[str, str]:
        p = {
            "response_type": "code",
            "client_id": self.cid,
            "redirect_uri": REDIRECT,
            "scope": "openid",
            "state": "s1",
        }
        if challenge is not None:
            p |= {"code_challenge": challenge, "code_challenge_method": "S256"}
        return {k: v for k, v in (p | over).items() if v != ""}

    def code(self, b: Browser, verifier_challenge: tuple[str, str], *, bind_at_par: bool = True) -> str:
        """A code from a pushed request; its DPoP proof binds the code to the key (RFC 9449 §10.1)."""
        pushed = self.post(
            "/par", self.params(verifier_challenge[1]), dpop=self.dpop if bind_at_par else None
        )
        assert pushed.status_code == 201, pushed.text
        r = b.follow(
            b.get(
                f"{self.idp.url}/authorize",
                params={"client_id": self.cid, "request_uri": pushed.json()["request_uri"]},
            )
        )
        if r.status_code == 200 and 'name="password"' in r.text:
            r = b.login("eve@example.org", PASSWORD, r)
        if r.status_code == 200 and 'name="decision"' in r.text:
            r = b.consent(r)
        answer = query(r.headers["Location"])
        assert answer["iss"] == self.idp.url  # FAPI 2.0 §5.3.2.2 / RFC 9207
        return answer["code"]


@pytest.fixture
def fapi(idp_factory: Any) -> Fapi2Client:
    idp = idp_factory(code_lifetime_seconds=300)  # the city's setting; FAPI 2.0 clients get ≤ 60 s
    idp.add_user("eve@example.org")
    return Fapi2Client(idp)


def _count(idp: Idp, model: Any) -> int:
    with transaction(idp.sessions()) as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def test_fapi2_client_completes_par_pkce_private_key_jwt_dpop_flow(fapi: Fapi2Client) -> None:
    verifier, challenge = pkce_pair()
    code = fapi.code(Browser(fapi.idp), (verifier, challenge))
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    tok = fapi.post("/token", data, dpop=fapi.dpop)
    assert tok.status_code == 200 and tok.json()["token_type"] == "DPoP", tok.text
    keys = KeySet.import_key_set(requests.get(f"{fapi.idp.url}/jwks.json", timeout=10).json())
    claims = jwt.decode(tok.json()["access_token"], keys).claims
    assert claims["cnf"]["jkt"] == fapi.dpop.jkt  # RFC 9449 §6.1: the access token is bound


def test_fapi2_authorization_codes_live_at_most_60_seconds_fapi2_5_3_2_1(fapi: Fapi2Client) -> None:
    before = utcnow()
    fapi.code(Browser(fapi.idp), pkce_pair())
    with transaction(fapi.idp.sessions()) as s:
        expires = s.execute(select(AuthorizationCode.expires_at)).scalar_one()
    assert expires - before <= dt.timedelta(seconds=61)


def test_fapi2_client_is_refused_without_par_fapi2_5_3_2_2(fapi: Fapi2Client) -> None:
    _v, challenge = pkce_pair()
    b = Browser(fapi.idp)
    r = b.follow(b.get(f"{fapi.idp.url}/authorize", params=fapi.params(challenge)))
    if r.status_code == 200 and 'name="password"' in r.text:
        r = b.login("eve@example.org", PASSWORD, r)
    answer = query(r.headers.get("Location", ""))
    assert "code" not in answer and answer.get("error") == "invalid_request", r.text
    assert _count(fapi.idp, AuthorizationCode) == 0


def test_fapi2_client_is_refused_without_pkce_fapi2_5_3_2_2(fapi: Fapi2Client) -> None:
    r = fapi.post("/par", fapi.params(None), dpop=fapi.dpop)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text
    plain = fapi.post("/par", fapi.params("x" * 43, code_challenge_method="plain"), dpop=fapi.dpop)
    assert plain.status_code == 400 and plain.json()["error"] == "invalid_request"
    assert _count(fapi.idp, PushedRequest) == 0


def test_fapi2_pushed_request_needs_redirect_uri_fapi2_5_3_2_2(fapi: Fapi2Client) -> None:
    _v, challenge = pkce_pair()
    r = fapi.post("/par", fapi.params(challenge, redirect_uri=""), dpop=fapi.dpop)
    assert r.status_code == 400 and "redirect_uri" in r.json()["error_description"]
    assert _count(fapi.idp, PushedRequest) == 0


def test_fapi2_token_request_without_sender_constraint_is_refused_fapi2_5_3_2_1(fapi: Fapi2Client) -> None:
    verifier, challenge = pkce_pair()
    code = fapi.code(Browser(fapi.idp), (verifier, challenge), bind_at_par=False)  # a code not bound
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    bearer = fapi.post("/token", data)
    assert bearer.status_code == 400 and bearer.json()["error"] == "invalid_request", bearer.text
    assert "sender-constrained" in bearer.json()["error_description"]
    # the refused request used nothing up: with the proof the same code is still good
    tok = fapi.post("/token", data, dpop=fapi.dpop)
    assert tok.status_code == 200 and tok.json()["token_type"] == "DPoP", tok.text

    machine = fapi.post("/token", {"grant_type": "client_credentials", "scope": "openid"})
    assert machine.status_code == 400 and machine.json()["error"] == "invalid_request"


def test_fapi2_refresh_needs_the_same_sender_constraint_fapi2_5_3_2_1(fapi: Fapi2Client) -> None:
    verifier, challenge = pkce_pair()
    code = fapi.code(Browser(fapi.idp), (verifier, challenge))
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    refresh = fapi.post("/token", data, dpop=fapi.dpop).json()["refresh_token"]
    ask = {"grant_type": "refresh_token", "refresh_token": refresh}
    bearer = fapi.post("/token", ask)  # the refresh token is bound to the key: no proof, no token
    assert bearer.status_code == 400 and "access_token" not in bearer.json()
    other = fapi.post("/token", ask, dpop=DpopKey())
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant"
    ok = fapi.post("/token", ask, dpop=fapi.dpop)
    assert ok.status_code == 200 and ok.json()["token_type"] == "DPoP", ok.text


def test_fapi2_client_assertion_audience_is_the_issuer_only_fapi2_5_3_2_1(fapi: Fapi2Client) -> None:
    _v, challenge = pkce_pair()
    data = fapi.params(challenge) | fapi.auth(aud=f"{fapi.idp.url}/par")
    r = requests.post(f"{fapi.idp.url}/par", data=data, timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post", "none"])
def test_fapi2_client_with_client_secret_or_no_authentication_is_refused_fapi2_5_3_2_1(method: str) -> None:
    with pytest.raises(ClientError, match="private_key_jwt"):
        validate_spec(ClientSpec(name="Kasse", redirect_uris=[REDIRECT], auth_method=method, profile="fapi2"))


def _cli(idp: Idp, *args: str) -> Any:
    env = {
        "CITYID_DATABASE_URL": idp.config.database_url,
        "CITYID_SECRET_KEY": idp.config.secret_key,
        "CITYID_KEY_PASSPHRASE": idp.config.key_passphrase,
    }
    return CliRunner().invoke(main, [*args, "--data-dir", str(Path(idp.config.data_dir))], env=env)


def test_cli_registers_shows_and_guards_a_fapi2_client(idp: Idp, tmp_path: Path) -> None:
    refused = _cli(
        idp, "client", "add", "--name", "Kasse", "--redirect-uri", REDIRECT, "--profile", "fapi2", "--json"
    )
    assert refused.exit_code == 2 and "private_key_jwt" in json.loads(refused.output)["error"]

    key = ECKey.generate_key("P-256", private=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    args = ["--redirect-uri", REDIRECT, "--auth-method", "private_key_jwt", "--jwks-file", str(jwks)]
    res = _cli(idp, "client", "add", "--name", "Kasse", *args, "--profile", "fapi2", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["profile"] == "fapi2" and data["require_pushed_authorization_requests"] is True
    assert f"{data['client_id']}  Kasse  [profile=fapi2 par]" in _cli(idp, "client", "list").output

    unpushed = _cli(idp, "client", "update", data["client_id"], "--allow-unpushed", "--json")
    assert unpushed.exit_code == 2
    secret_client = _cli(idp, "client", "add", "--name", "Alt", "--redirect-uri", REDIRECT, "--json")
    upgraded = _cli(
        idp, "client", "update", json.loads(secret_client.output)["client_id"], "--profile", "fapi2"
    )
    assert upgraded.exit_code == 2 and "private_key_jwt" in upgraded.output
    other = _cli(idp, "client", "add", "--name", "Neu", *args, "--json")
    oid = json.loads(other.output)["client_id"]
    up = _cli(idp, "client", "update", oid, "--profile", "fapi2", "--json")
    assert up.exit_code == 0 and json.loads(up.output)["profile"] == "fapi2", up.output
    assert json.loads(up.output)["require_pushed_authorization_requests"] is True


def test_discovery_tells_what_each_client_profile_needs(idp: Idp) -> None:
    meta = requests.get(f"{idp.url}/.well-known/openid-configuration", timeout=10).json()
    profiles = meta["cityid_client_profiles"]
    assert profiles["default"]["pkce_required"] is True
    fapi2 = profiles["fapi2"]
    assert fapi2["require_pushed_authorization_requests"] is True
    assert fapi2["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert fapi2["sender_constrained_access_tokens_required"] is True
    assert fapi2["authorization_code_lifetime_max"] <= 60
    assert meta["require_pushed_authorization_requests"] is False  # RFC 9126 §5: not for every client
