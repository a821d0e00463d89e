"""cityid behind the TLS-terminating proxy of docs/operations.md: requests arrive over plain
http with the public Host header (HAProxy passes it on; so does nginx with the common
`proxy_set_header Host $host`), and every URL cityid uses is the configured https issuer.

Before the fix, Authlib rebuilt the request URL from the Host header, found it was not https and
refused every token request with a 500 (InsecureTransportError).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from idp.app import create_app
from idp.config import issuer_problem
from tests.idp.conftest import Idp, make_config

ISSUER = "https://login.example.org"
PUBLIC = {"Host": "login.example.org", "X-Forwarded-Proto": "https"}


@pytest.fixture
def proxied(idp_factory) -> Idp:  # type: ignore[no-untyped-def]
    return idp_factory(issuer=ISSUER)


def test_token_endpoint_answers_requests_forwarded_over_http_with_the_public_host(proxied: Idp) -> None:
    cid, secret = proxied.add_client(name="Backend", grant_types=["client_credentials"], scope="permits:read")
    r = requests.post(
        f"{proxied.served_at}/token",
        auth=(cid, secret),
        headers=PUBLIC,
        data={"grant_type": "client_credentials", "scope": "permits:read"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    keys = requests.get(f"{proxied.served_at}/jwks.json", headers=PUBLIC, timeout=10).json()
    jwks = KeySet.import_key_set(keys)
    assert jwt.decode(token, jwks).claims["iss"] == ISSUER  # RFC 9068 §2.2

    # introspection (RFC 7662) and revocation (RFC 7009) through the same proxy
    def call(path: str) -> requests.Response:
        return requests.post(
            f"{proxied.served_at}{path}",
            auth=(cid, secret),
            headers=PUBLIC,
            data={"token": token},
            timeout=10,
        )

    r = call("/introspect")
    assert r.status_code == 200 and r.json()["active"] is True, r.text
    assert call("/revoke").status_code == 200
    assert call("/introspect").json() == {"active": False}


def test_authorization_request_forwarded_over_http_asks_for_the_login(proxied: Idp) -> None:
    cid, _ = proxied.add_client(name="Portal", redirect_uris=["https://portal.example/cb"])
    r = requests.get(
        f"{proxied.served_at}/authorize",
        headers=PUBLIC,
        params={
            "response_type": "code",
            "client_id": cid,
            "redirect_uri": "https://portal.example/cb",
            "scope": "openid",
            "state": "s",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 302, r.text
    assert r.headers["Location"].startswith("/login?")


def test_published_urls_come_from_the_issuer_never_from_the_host_header(proxied: Idp) -> None:
    meta = requests.get(
        f"{proxied.served_at}/.well-known/openid-configuration", headers={"Host": "evil.example"}, timeout=10
    ).json()
    assert meta["issuer"] == ISSUER  # OIDC Discovery §4.3
    urls = [v for v in meta.values() if isinstance(v, str) and "://" in v and not v.startswith("urn:")]
    assert urls and all(u.startswith(f"{ISSUER}/") or u == ISSUER for u in urls), urls


@pytest.mark.parametrize(
    ("issuer", "fragment"),
    [
        ("http://login.example.org", "https://"),
        ("ftp://login.example.org", "https://"),
        ("login.example.org", "https://"),
        ("https://", "https://"),
        ("https://login.example.org?x=1", "query"),
        ("https://login.example.org#top", "fragment"),
        ("https://login.example.org/", "must not end with '/'"),
        ("https://[::1", "not a URL"),
        ("https://www.example.org/id", "root of a host name"),
        ("https://user@login.example.org", "root of a host name"),
        ("https://login.example.org:443", "https://login.example.org"),
        ("https://Login.Example.org", "https://login.example.org"),
        ("HTTPS://login.example.org", "https://login.example.org"),
        ("https://login.example.org:99999", "invalid port"),
        ("https://login.münchen.de", "https://login.xn--mnchen-3ya.de"),
    ],
)
def test_issuer_must_be_an_https_origin_without_path_query_fragment_rfc8414_2(
    issuer: str, fragment: str
) -> None:
    problem = issuer_problem(issuer)
    assert problem is not None and fragment in problem


@pytest.mark.parametrize(
    "issuer",
    [
        "https://login.musterstadt.de",
        "https://login.musterstadt.de:8443",
        "http://127.0.0.1:8000",
        "http://localhost:8000",
        "http://[::1]:8000",
    ],
)
def test_https_issuers_and_loopback_http_for_development_are_accepted(issuer: str) -> None:
    assert issuer_problem(issuer) is None


def test_app_refuses_to_start_with_an_insecure_issuer(tmp_path: Path, db_url: str) -> None:
    cfg = make_config(tmp_path, db_url, "http://login.example.org")
    with pytest.raises(ValueError, match="https://"):
        create_app(cfg, check_schema=False)


def test_cli_init_and_serve_refuse_an_insecure_issuer_before_writing_anything(tmp_path: Path) -> None:
    from tests.idp.test_processes import cityid, write_config

    data = tmp_path / "new"
    res = cityid(data, "init", "--issuer", "http://login.example.org", "--json", check=False)
    assert res.returncode == 2 and "https://" in res.stdout, res.stdout + res.stderr
    assert not data.exists()

    data = tmp_path / "existing"
    write_config(data, f"sqlite:///{tmp_path / 'db.sqlite3'}", "http://login.example.org")
    res = cityid(data, "init", check=False)
    assert res.returncode == 2 and "cityid.toml" in res.stderr, res.stderr
    assert not (tmp_path / "db.sqlite3").exists()  # refused before the database was touched
    res = cityid(data, "serve", check=False)
    assert res.returncode == 2 and "https://" in res.stderr, res.stderr


def test_scope_levels_by_name_are_understood_and_unknown_ones_refuse_to_serve(tmp_path: Path) -> None:
    """An entry the policy cannot read would release its scope at level low: names are mapped,
    anything else stops `cityid serve` (exit 2)."""
    from idp.config import LEVEL_HIGH, LEVEL_SUBSTANTIAL, load_config
    from tests.idp.test_processes import cityid, write_config

    data = tmp_path / "data"
    write_config(data, f"sqlite:///{tmp_path / 'db.sqlite3'}", "http://127.0.0.1:8000")
    with (data / "cityid.toml").open("a") as fh:
        fh.write('\n[scope_levels]\npayment = "Substantial"\n"records:read" = "high"\n')
    assert load_config(data).scope_levels == {"payment": LEVEL_SUBSTANTIAL, "records:read": LEVEL_HIGH}
    cityid(data, "init")
    res = cityid(data, "serve", check=False, env={"CITYID_SCOPE_LEVELS": "payment=strong"})
    assert res.returncode == 2 and "scope_levels" in res.stderr, res.stderr


def test_cli_init_does_not_pretend_to_change_the_issuer_of_an_existing_instance(tmp_path: Path) -> None:
    from tests.idp.test_processes import cityid

    data = tmp_path / "d"
    cityid(data, "init")
    res = cityid(data, "init", "--issuer", "https://login.example.de", "--json", check=False)
    assert res.returncode == 2 and "cityid.toml" in res.stdout, res.stdout + res.stderr
    assert 'issuer = "http://127.0.0.1:8000"' in (data / "cityid.toml").read_text()
    assert cityid(data, "init", "--issuer", "http://127.0.0.1:8000").returncode == 0  # the same: fine
