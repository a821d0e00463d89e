"""Signing keys: published before use, retired keys stay published until their tokens expire."""

from __future__ import annotations

import datetime as dt
from typing import Any

import requests

from db import transaction
from idp.keys import rotate
from tests.idp.conftest import Idp


def _kids(idp: Idp) -> set[str]:
    return {k["kid"] for k in requests.get(f"{idp.url}/jwks.json", timeout=10).json()["keys"]}


def test_rotated_key_is_published_before_it_signs_and_old_key_stays(idp: Idp) -> None:
    cid, secret = idp.add_client(name="B", grant_types=["client_credentials"], scope="x")
    before = _kids(idp)
    with transaction(idp.sessions()) as s:
        new = rotate(
            s,
            idp.config.key_passphrase,
            alg="ES256",
            publish_ahead=dt.timedelta(hours=1),
            max_token_lifetime=dt.timedelta(hours=1),
        )
    idp.app.extensions["cityid"].key_cache.invalidate()
    assert new.kid in _kids(idp) and before <= _kids(idp)
    tok = requests.post(
        f"{idp.url}/token", auth=(cid, secret), timeout=10, data={"grant_type": "client_credentials"}
    ).json()["access_token"]
    from joserfc import jws

    assert jws.extract_compact(tok.encode()).headers()["kid"] != new.kid  # not yet active


def test_rotated_key_signs_once_active(idp: Idp) -> None:
    cid, secret = idp.add_client(name="B", grant_types=["client_credentials"], scope="x")
    with transaction(idp.sessions()) as s:
        new = rotate(
            s,
            idp.config.key_passphrase,
            alg="ES256",
            publish_ahead=dt.timedelta(0),
            max_token_lifetime=dt.timedelta(hours=1),
        )
    idp.app.extensions["cityid"].key_cache.invalidate()
    tok = requests.post(
        f"{idp.url}/token", auth=(cid, secret), timeout=10, data={"grant_type": "client_credentials"}
    ).json()["access_token"]
    from joserfc import jws

    assert jws.extract_compact(tok.encode()).headers()["kid"] == new.kid


def test_private_keys_are_encrypted_at_rest(idp: Idp) -> None:
    from sqlalchemy import select

    from idp.models import SigningKey

    with idp.sessions()() as s:
        for row in s.execute(select(SigningKey)).scalars():
            assert b'"d"' not in row.private_enc and b'"d":' not in row.private_enc


def test_an_emergency_rotation_after_a_scheduled_one_retires_every_older_key_at_once(idp: Idp) -> None:
    """`keys rotate --publish-ahead 3600`, then (the key may be compromised) `--publish-ahead 0`:
    the first key must not keep signing for the hour the earlier rotation scheduled."""
    from sqlalchemy import select

    from db import utcnow
    from idp.models import SigningKey

    def rotate_now(ahead: dt.timedelta) -> str:
        with transaction(idp.sessions()) as s:
            key = rotate(
                s,
                idp.config.key_passphrase,
                alg="ES256",
                publish_ahead=ahead,
                max_token_lifetime=dt.timedelta(minutes=10),
            )
            return str(key.kid)

    rotate_now(dt.timedelta(hours=1))
    newest = rotate_now(dt.timedelta(0))
    with idp.sessions()() as s:
        others = [
            k
            for k in s.execute(select(SigningKey).where(SigningKey.alg == "ES256")).scalars()
            if k.kid != newest
        ]
    soon = utcnow() + dt.timedelta(seconds=5)
    assert others and all(k.retired_at is not None and k.retired_at <= soon for k in others)
    assert all(k.expires_at is not None and k.expires_at <= soon + dt.timedelta(minutes=10) for k in others)


def test_cityid_keys_rotate_refuses_a_negative_publish_ahead(idp: Idp) -> None:
    from click.testing import CliRunner

    from cli import main

    res = CliRunner().invoke(
        main, ["keys", "rotate", "--publish-ahead", "-3600", "--data-dir", str(idp.config.data_dir)]
    )
    assert res.exit_code == 2 and "-3600" in res.output


def test_an_rs256_key_loaded_without_the_consistency_check_is_the_sealed_key_and_signs_rfc7518_3_3(
    db_sessions: Any,
) -> None:
    """KeyCache builds our RSA key from its sealed private JWK without cryptography's consistency
    check (idp.keys): it must be exactly the key a checked import gives, and its RS256 signature
    must verify with the published JWK."""
    from joserfc import jws
    from joserfc.jwk import KeySet, RSAKey

    from idp.keys import KeyCache, create_key

    with transaction(db_sessions) as s:
        row = create_key(s, "passphrase", "RS256")
        kid = row.kid
    with db_sessions() as s:
        material = KeyCache("passphrase").get(s)
    loaded = material.signing["RS256"]
    checked = RSAKey.import_key(loaded.as_dict(private=True))
    assert loaded.as_dict(private=True) == checked.as_dict(private=True)
    assert loaded.private_key is not None
    assert loaded.private_key.private_numbers() == checked.private_key.private_numbers()
    token = jws.serialize_compact({"alg": "RS256", "kid": kid}, b"payload", loaded)
    published = KeySet.import_key_set(material.jwks)
    assert jws.deserialize_compact(token, published, algorithms=["RS256"]).payload == b"payload"
