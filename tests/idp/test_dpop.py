"""DPoP (RFC 9449): proofs at the token endpoint and at resources; bound tokens."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.idp.conftest import Browser, Idp, pkce_pair, query
from tests.idp.dpop_client import DpopKey

REDIRECT = "http://127.0.0.1:9/app"
PASSWORD = "correct horse battery staple"


def _code(idp: Idp, cid: str, challenge: str, **extra: str) -> str:
    b = Browser(idp)
    params = {
        "response_type": "code",
        "client_id": cid,
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    r = b.follow(b.get(f"{idp.url}/authorize", params=params))
    r = b.login("dpop@example.org", PASSWORD, r)
    if r.status_code == 200:
        r = b.consent(r)
    return query(r.headers["Location"])["code"]


def _token(
    idp: Idp, key: DpopKey | None, data: dict[str, str], proof: str | None = None
) -> requests.Response:
    headers = {}
    if key is not None:
        headers["DPoP"] = proof or key.proof("POST", f"{idp.url}/token")
    return requests.post(f"{idp.url}/token", data=data, headers=headers, timeout=10)


def _nonce_dance(idp: Idp, key: DpopKey, data: dict[str, str]) -> requests.Response:
    r = _token(idp, key, data)
    # RFC 9449 §8: the server demands a nonce and supplies one
    assert r.status_code == 400 and r.json()["error"] == "use_dpop_nonce"
    key.nonce = r.headers["DPoP-Nonce"]
    return _token(idp, key, data)


@pytest.fixture
def bound(idp: Idp) -> tuple[Idp, str, DpopKey, dict[str, Any]]:
    cid, _ = idp.add_client(name="City app", redirect_uris=[REDIRECT], auth_method="none")
    idp.add_user("dpop@example.org")
    verifier, challenge = pkce_pair()
    code = _code(idp, cid, challenge)
    key = DpopKey()
    r = _nonce_dance(
        idp,
        key,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": cid,
            "code_verifier": verifier,
        },
    )
    assert r.status_code == 200, r.text
    return idp, cid, key, r.json()


def test_token_is_dpop_bound_with_cnf_jkt_rfc9449_5_and_6(bound: Any) -> None:
    idp, _cid, key, tok = bound
    assert tok["token_type"] == "DPoP"
    jwks = KeySet.import_key_set(requests.get(f"{idp.url}/jwks.json", timeout=10).json())
    claims = jwt.decode(tok["access_token"], jwks).claims
    assert claims["cnf"] == {"jkt": key.jkt}


def test_resource_accepts_proof_by_the_bound_key_rfc9449_7(bound: Any) -> None:
    idp, _cid, key, tok = bound
    url = f"{idp.url}/api/demo/resource"
    at = tok["access_token"]
    r = requests.get(
        url,
        timeout=10,
        headers={"Authorization": f"DPoP {at}", "DPoP": key.proof("GET", url, access_token=at)},
    )
    assert r.status_code == 200, r.text
    assert r.json()["bound_to"] == {"jkt": key.jkt}
    info = f"{idp.url}/userinfo"
    r = requests.get(
        info,
        timeout=10,
        headers={"Authorization": f"DPoP {at}", "DPoP": key.proof("GET", info, access_token=at)},
    )
    assert r.status_code == 200 and r.json()["sub"]


@pytest.mark.parametrize(
    "case",
    [
        "bearer-scheme",
        "no-proof",
        "other-key",
        "replayed",
        "wrong-htu",
        "wrong-htm",
        "stale-iat",
        "future-iat",
        "iat-beyond-float",
        "iat-true",
        "wrong-ath",
        "no-ath",
        "no-nonce",
        "bad-nonce",
        "two-headers",
        "private-key-in-header",
        "alg-none",
        "non-ascii-ath",
        "htu-port-out-of-range",
    ],
)
def test_resource_refuses_bad_dpop_proofs_rfc9449_4_3(bound: Any, case: str) -> None:
    import time

    idp, _cid, key, tok = bound
    url = f"{idp.url}/api/demo/resource"
    at = tok["access_token"]
    headers = {"Authorization": f"DPoP {at}", "DPoP": key.proof("GET", url, access_token=at)}
    if case == "bearer-scheme":
        headers["Authorization"] = f"Bearer {at}"
    elif case == "no-proof":
        del headers["DPoP"]
    elif case == "other-key":
        other = DpopKey()
        other.nonce = key.nonce
        headers["DPoP"] = other.proof("GET", url, access_token=at)
    elif case == "replayed":
        assert requests.get(url, headers=headers, timeout=10).status_code == 200
    elif case == "wrong-htu":
        headers["DPoP"] = key.proof("GET", f"{idp.url}/userinfo", access_token=at)
    elif case == "wrong-htm":
        headers["DPoP"] = key.proof("POST", url, access_token=at)
    elif case == "stale-iat":
        headers["DPoP"] = key.proof("GET", url, access_token=at, iat=int(time.time()) - 600)
    elif case == "future-iat":
        headers["DPoP"] = key.proof("GET", url, access_token=at, iat=int(time.time()) + 600)
    elif case == "iat-beyond-float":  # `now - iat` as a float overflowed: a 500
        headers["DPoP"] = key.proof("GET", url, access_token=at, iat=10**400)
    elif case == "iat-true":  # JSON true is no NumericDate (RFC 7519 §2)
        headers["DPoP"] = key.proof("GET", url, access_token=at, iat=True)
    elif case == "wrong-ath":
        headers["DPoP"] = key.proof("GET", url, access_token=at + "x")
    elif case == "no-ath":
        headers["DPoP"] = key.proof("GET", url)
    elif case == "non-ascii-ath":
        headers["DPoP"] = key.proof("GET", url, ath="\u00e9" * 43)
    elif case == "htu-port-out-of-range":
        headers["DPoP"] = key.proof(
            "GET", "https://login.example.org:99999/api/demo/resource", access_token=at
        )
    elif case == "no-nonce":
        key.nonce = None
        headers["DPoP"] = key.proof("GET", url, access_token=at)
    elif case == "bad-nonce":
        headers["DPoP"] = key.proof("GET", url, access_token=at, nonce="1.AAAA")
    elif case == "two-headers":
        headers = [
            ("Authorization", f"DPoP {at}"),  # type: ignore[assignment]
            ("DPoP", key.proof("GET", url, access_token=at)),
            ("DPoP", key.proof("GET", url, access_token=at)),
        ]
    elif case == "private-key-in-header":
        import json

        from joserfc import jws

        hdr = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.key.as_dict(private=True)}
        body = {
            "jti": "x1",
            "htm": "GET",
            "htu": url,
            "iat": int(time.time()),
            "nonce": key.nonce,
            "ath": __import__("idp.oauth.dpop", fromlist=["x"]).access_token_hash(at),
        }
        headers["DPoP"] = jws.serialize_compact(hdr, json.dumps(body).encode(), key.key)
    elif case == "alg-none":
        import base64
        import json

        def b(d: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

        headers["DPoP"] = (
            b({"typ": "dpop+jwt", "alg": "none", "jwk": key.key.as_dict(private=False)})
            + "."
            + b({"jti": "n", "htm": "GET", "htu": url, "iat": int(time.time())})
            + "."
        )
    if isinstance(headers, list):
        from urllib3 import PoolManager

        resp = PoolManager().request("GET", url, headers=None)
        # requests merges duplicate headers; use http.client to send two DPoP headers
        import http.client
        from urllib.parse import urlsplit

        u = urlsplit(url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        conn.putrequest("GET", u.path)
        for k, v in headers:
            conn.putheader(k, v)
        conn.endheaders()
        status = conn.getresponse().status
        del resp
    else:
        r = requests.get(url, headers=headers, timeout=10)
        status = r.status_code
        assert "WWW-Authenticate" in r.headers
    assert status == 401, case


def test_public_client_refresh_needs_the_same_dpop_key_rfc9449_5(bound: Any) -> None:
    idp, cid, key, tok = bound
    data = {"grant_type": "refresh_token", "refresh_token": tok["refresh_token"], "client_id": cid}
    other = DpopKey()
    other.nonce = key.nonce
    r = _token(idp, other, data)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = _token(idp, None, data)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = _token(idp, key, data)
    assert r.status_code == 200 and r.json()["token_type"] == "DPoP"


def test_token_request_with_bad_proof_is_invalid_dpop_proof(idp: Idp) -> None:
    cid, secret = idp.add_client(name="B", grant_types=["client_credentials"], scope="x")
    key = DpopKey()
    r = requests.post(
        f"{idp.url}/token",
        auth=(cid, secret),
        timeout=10,
        data={"grant_type": "client_credentials"},
        headers={"DPoP": key.proof("POST", f"{idp.url}/elsewhere")},
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_dpop_proof"
    key.nonce = r.headers["DPoP-Nonce"]
    r = requests.post(
        f"{idp.url}/token",
        auth=(cid, secret),
        timeout=10,
        data={"grant_type": "client_credentials"},
        headers={"DPoP": key.proof("POST", f"{idp.url}/token")},
    )
    assert r.status_code == 200 and r.json()["token_type"] == "DPoP"
    # RFC 9449 §6.2: introspection tells a resource server the token needs a proof
    seen = requests.post(
        f"{idp.url}/introspect", auth=(cid, secret), data={"token": r.json()["access_token"]}, timeout=10
    ).json()
    assert seen["active"] and seen["token_type"] == "DPoP" and seen["cnf"] == {"jkt": key.jkt}


def test_token_request_with_an_iat_beyond_a_float_is_invalid_dpop_proof_rfc9449_4_3(idp: Idp) -> None:
    # before the client is authenticated: anyone could turn the proof check into a 500
    key = DpopKey()
    r = _token(idp, key, {"grant_type": "client_credentials"})
    key.nonce = r.headers["DPoP-Nonce"]
    proof = key.proof("POST", f"{idp.url}/token", iat=-(10**400))
    r = _token(idp, key, {"grant_type": "client_credentials"}, proof=proof)
    assert r.status_code == 400 and r.json()["error"] == "invalid_dpop_proof"


def test_code_bound_by_dpop_jkt_needs_that_key_rfc9449_10(idp: Idp) -> None:
    cid, _ = idp.add_client(name="City app", redirect_uris=[REDIRECT], auth_method="none")
    idp.add_user("dpop@example.org")
    key, other = DpopKey(), DpopKey()
    verifier, challenge = pkce_pair()
    code = _code(idp, cid, challenge, dpop_jkt=key.jkt)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": cid,
        "code_verifier": verifier,
    }
    r = _nonce_dance(idp, other, data)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    key.nonce = other.nonce
    assert _token(idp, key, data).status_code == 200


def test_long_jtis_that_differ_late_are_not_taken_for_replays_rfc9449_11_1(idp: Idp) -> None:
    cid, secret = idp.add_client(name="B", grant_types=["client_credentials"], scope="x")
    key = DpopKey()

    def token(jti: str) -> requests.Response:
        return requests.post(
            f"{idp.url}/token",
            auth=(cid, secret),
            timeout=10,
            data={"grant_type": "client_credentials"},
            headers={"DPoP": key.proof("POST", f"{idp.url}/token", jti=jti)},
        )

    key.nonce = token("nonce-dance").headers["DPoP-Nonce"]
    prefix = "j" * 190  # jti may be 200 characters; the replay key used to be cut at 200
    assert token(prefix + "1").status_code == 200
    assert token(prefix + "2").status_code == 200  # another proof, not a replay
    replayed = token(prefix + "2")
    assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_dpop_proof"


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_rsa_dpop_proofs_as_discovery_advertises_rfc9449_5_1(idp: Idp, alg: str) -> None:
    """An RSA-2048 key in the proof's header makes it longer than joserfc's default limit."""
    import json

    from joserfc import jws as joserfc_jws
    from joserfc.jwk import RSAKey

    cid, secret = idp.add_client(name="M2M", grant_types=["client_credentials"], scope="x")
    key = RSAKey.generate_key(2048, private=True)
    url = f"{idp.url}/token"

    def proof(nonce: str | None = None) -> str:
        claims = {"jti": secrets.token_urlsafe(16), "htm": "POST", "htu": url, "iat": int(time.time())}
        if nonce:
            claims["nonce"] = nonce
        header = {"typ": "dpop+jwt", "alg": alg, "jwk": key.as_dict(private=False)}
        return joserfc_jws.serialize_compact(header, json.dumps(claims).encode(), key, algorithms=[alg])

    data = {"grant_type": "client_credentials"}
    r = requests.post(url, auth=(cid, secret or ""), data=data, headers={"DPoP": proof()}, timeout=10)
    if r.status_code == 400 and r.json()["error"] == "use_dpop_nonce":
        r = requests.post(
            url,
            auth=(cid, secret or ""),
            data=data,
            headers={"DPoP": proof(r.headers["DPoP-Nonce"])},
            timeout=10,
        )
    assert r.status_code == 200 and r.json()["token_type"] == "DPoP", r.text


def test_a_request_without_credentials_gets_both_challenges_and_no_error_code_rfc6750_3_1(idp: Idp) -> None:
    for path in ("/userinfo", "/api/demo/resource"):
        r = requests.get(f"{idp.url}{path}", timeout=10)
        challenge = r.headers["WWW-Authenticate"]
        assert r.status_code == 401 and "error=" not in challenge, challenge
        assert challenge.startswith("Bearer") and 'DPoP algs="' in challenge  # RFC 9449 §7.1
    r = requests.get(f"{idp.url}/userinfo", timeout=10, headers={"Authorization": "Basic eDp5"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_request"
