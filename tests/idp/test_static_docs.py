"""Discovery and JWKS are static documents: precomputed bytes with a strong ETag, 304 on a match,
Cache-Control, and a JWKS that follows key rotation in every worker."""

from __future__ import annotations

import datetime as dt

import requests
from werkzeug.test import Client

from db import transaction
from idp.app import create_app
from idp.keys import rotate
from tests.idp.conftest import Idp

DISCOVERY = "/.well-known/openid-configuration"


def test_discovery_has_a_strong_etag_and_is_cacheable(idp: Idp) -> None:
    r = requests.get(idp.url + DISCOVERY, timeout=10)
    assert r.status_code == 200 and r.json()["issuer"] == idp.url
    etag = r.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")  # RFC 9110 §8.8.3
    assert r.headers["Cache-Control"] == "public, max-age=300"  # RFC 9111 §5.2.2
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["Access-Control-Allow-Origin"] == "*"  # a SPA reads it (idp.cors)
    assert r.headers["X-Content-Type-Options"] == "nosniff"  # the security headers of every answer
    assert int(r.headers["Content-Length"]) == len(r.content)


def test_discovery_if_none_match_gets_304_with_the_same_validators(idp: Idp) -> None:
    etag = requests.get(idp.url + DISCOVERY, timeout=10).headers["ETag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):  # RFC 9110 §13.1.2
        r = requests.get(idp.url + DISCOVERY, headers={"If-None-Match": header}, timeout=10)
        assert r.status_code == 304 and r.content == b"", header
        assert r.headers["ETag"] == etag and r.headers["Cache-Control"] == "public, max-age=300"  # §15.4.5
    r = requests.get(idp.url + DISCOVERY, headers={"If-None-Match": '"stale"'}, timeout=10)
    assert r.status_code == 200 and r.json()["issuer"] == idp.url


def test_discovery_head_has_no_body_and_post_is_refused(idp: Idp) -> None:
    r = requests.head(idp.url + DISCOVERY, timeout=10)
    assert r.status_code == 200 and r.content == b"" and "ETag" in r.headers
    assert requests.post(idp.url + DISCOVERY, timeout=10).status_code == 405


def test_jwks_if_none_match_gets_304(idp: Idp) -> None:
    r = requests.get(idp.url + "/jwks.json", timeout=10)
    assert r.status_code == 200 and r.json()["keys"]
    assert r.headers["Cache-Control"] == "public, max-age=60"
    r2 = requests.get(idp.url + "/jwks.json", headers={"If-None-Match": r.headers["ETag"]}, timeout=10)
    assert r2.status_code == 304 and r2.content == b"" and r2.headers["ETag"] == r.headers["ETag"]


def test_jwks_follows_key_rotation_with_a_new_etag(idp: Idp) -> None:
    before = requests.get(idp.url + "/jwks.json", timeout=10)
    with transaction(idp.sessions()) as s:
        new = rotate(
            s,
            idp.config.key_passphrase,
            alg="ES256",
            publish_ahead=dt.timedelta(hours=1),
            max_token_lifetime=dt.timedelta(hours=1),
        )
    idp.key_cache.invalidate()  # what the cache's ttl does on its own within 30 s
    stale = {"If-None-Match": before.headers["ETag"]}
    after = requests.get(idp.url + "/jwks.json", headers=stale, timeout=10)
    assert after.status_code == 200  # the old tag no longer matches
    assert new.kid in {k["kid"] for k in after.json()["keys"]}
    assert after.headers["ETag"] != before.headers["ETag"]
    again = requests.get(idp.url + "/jwks.json", timeout=10)  # from the middleware's bytes now
    assert again.content == after.content and again.headers["ETag"] == after.headers["ETag"]


def test_every_worker_names_the_same_documents_with_the_same_etag(idp: Idp) -> None:
    other = create_app(idp.config)  # a second worker on the same database
    try:
        c = Client(other)
        for path in (DISCOVERY, "/jwks.json"):
            mine = requests.get(idp.url + path, timeout=10)
            theirs = c.get(path)
            assert theirs.status_code == 200 and theirs.data == mine.content
            assert theirs.headers["ETag"] == mine.headers["ETag"], path
    finally:
        other.extensions["cityid"].courier.stop()
        other.extensions["cityid"].engine.dispose()


def test_rfc8414_metadata_is_the_same_static_document(idp: Idp) -> None:
    oidc = requests.get(idp.url + DISCOVERY, timeout=10)
    r = requests.get(idp.url + "/.well-known/oauth-authorization-server", timeout=10)
    assert r.status_code == 200 and r.content == oidc.content  # RFC 8414 §3: one document
    assert r.headers["ETag"] == oidc.headers["ETag"]
    r2 = requests.get(
        idp.url + "/.well-known/oauth-authorization-server",
        headers={"If-None-Match": r.headers["ETag"]},
        timeout=10,
    )
    assert r2.status_code == 304
