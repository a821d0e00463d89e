"""RFC 9068 §5: a machine's access token never carries a citizen's ``sub``.

A client-credentials token's subject is ``client:<client_id>``; a citizen's subject (public: the
account id; pairwise: an HMAC) is base64url and never holds a ``:``. The two namespaces are
disjoint by construction, whatever client_id an admin chooses."""

from __future__ import annotations

import re

import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from db import transaction
from idp.models import Client
from idp.oauth.subjects import machine_subject, subject_for
from tests.idp.conftest import Idp

REDIRECT = "http://127.0.0.1:9/cb"
CITIZEN_SUB = re.compile(r"[A-Za-z0-9_-]+")


def _machine_token_claims(idp: Idp, cid: str, secret: str | None) -> dict[str, object]:
    r = requests.post(
        f"{idp.url}/token",
        auth=(cid, secret or ""),
        data={"grant_type": "client_credentials", "scope": "permits:read"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    jwks = KeySet.import_key_set(requests.get(f"{idp.url}/jwks.json", timeout=10).json())
    claims: dict[str, object] = jwt.decode(r.json()["access_token"], jwks).claims
    # what introspection tells a resource server is the same subject (RFC 7662 §2.2)
    token = r.json()["access_token"]
    r = requests.post(f"{idp.url}/introspect", auth=(cid, secret or ""), data={"token": token}, timeout=10)
    assert r.status_code == 200 and r.json()["sub"] == claims["sub"], r.text
    return claims


def test_client_named_after_an_account_gets_no_citizens_public_sub_rfc9068_5(idp: Idp) -> None:
    account_id = idp.add_user("eve@example.org")
    public_rp, _ = idp.add_client(name="Public RP", redirect_uris=[REDIRECT], subject_type="public")
    with transaction(idp.sessions()) as s:
        row = s.get(Client, public_rp)
        assert row is not None
        citizens_sub = subject_for(idp.keys.subject, row, account_id)
    assert citizens_sub == account_id  # a public subject is the account id
    cid, secret = idp.add_client(
        name="Backend", client_id=account_id, grant_types=["client_credentials"], scope="permits:read"
    )
    claims = _machine_token_claims(idp, cid, secret)
    assert claims["sub"] != citizens_sub
    assert claims["sub"] == machine_subject(cid) == f"client:{cid}" and claims["client_id"] == cid


def test_client_named_after_a_pairwise_sub_gets_no_citizens_sub_rfc9068_5(idp: Idp) -> None:
    account_id = idp.add_user("eve@example.org")
    rp, _ = idp.add_client(name="RP", redirect_uris=[REDIRECT])  # pairwise by default
    with transaction(idp.sessions()) as s:
        row = s.get(Client, rp)
        assert row is not None
        citizens_sub = subject_for(idp.keys.subject, row, account_id)
    assert CITIZEN_SUB.fullmatch(citizens_sub) and len(citizens_sub) <= 64
    cid, secret = idp.add_client(
        name="Backend", client_id=citizens_sub, grant_types=["client_credentials"], scope="permits:read"
    )
    claims = _machine_token_claims(idp, cid, secret)
    assert claims["sub"] != citizens_sub and ":" in str(claims["sub"])


def test_citizen_subjects_are_base64url_so_never_a_machine_subject(idp: Idp) -> None:
    account_id = idp.add_user("eve@example.org")
    for subject_type in ("public", "pairwise"):
        cid, _ = idp.add_client(name="RP", redirect_uris=[REDIRECT], subject_type=subject_type)
        with transaction(idp.sessions()) as s:
            row = s.get(Client, cid)
            assert row is not None
            assert CITIZEN_SUB.fullmatch(subject_for(idp.keys.subject, row, account_id)), subject_type
