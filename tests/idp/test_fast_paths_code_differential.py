"""Authlib is the oracle of the code exchange's fast path (idp.oauth.fast_code) and of
private_key_jwt in the fast paths (idp.oauth.fast_paths).

Hypothesis generates code exchanges, valid and hostile: wrong, missing, doubled and mixed client
authentication (secrets, private_key_jwt assertions expired, replayed, for another audience, with
iss != sub, without jti, signed by another key, living too long), clients without the grant,
public, FAPI 2.0 and disabled clients; codes used (a replay: Authlib revokes the family), expired,
another client's, of a revoked or DPoP-bound grant or a disabled citizen, missing, empty, huge;
wrong, missing and malformed verifiers, a verifier without challenge; a wrong, missing or
unregistered redirect_uri; codes with and without openid, nonce, auth_time, acr, amr and sid;
repeated and unknown parameters, query strings, other content types, DPoP proofs and client
certificates. Each case makes two codes alike in everything but their random values and runs one
through the app with ``fast_paths = true`` and the other through Authlib alone, on the same
database, and compares status, headers, the JSON body, the access token's and ID token's headers
and claims (random values and times aside), the database rows each request adds or changes and
the audit entries (the two codes' grant ids, code and refresh token digests and replay keys read
as placeholders).

Cases per database backend: every single fault (each field's every other value, one at a time:
about 80) and CODE_EXAMPLES random combinations of up to three faults; JWT_EXAMPLES private_key_jwt
client-credentials and introspection requests each; each test also insists that the fast path really
answered a good share of its cases (else it would prove nothing).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from joserfc import jws, jwt
from joserfc.jwk import ECKey
from sqlalchemy import text, update
from werkzeug.test import Client as WsgiClient

import idp.oauth.fast_code as fast_code
import idp.oauth.fast_paths as fast_paths
from db import new_id, transaction
from idp.app import create_app
from idp.models import Account, AuthorizationCode, Client, Grant
from tests.idp.conftest import Idp
from tests.idp.dpop_client import DpopKey
from tests.idp.test_fast_paths_differential import (
    ANSWER_HEADERS,
    MTLS_HEADER,
    VOLATILE_CLAIMS,
    _audit_since,
    _basic,
    _claims_of,
    _diff,
    _full_answer,
    _state,
)

CODE_EXAMPLES = 50
JWT_EXAMPLES = 30
REDIRECT = "https://rp.example/cb"
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclasses.dataclass
class World:
    idp: Idp
    fast: WsgiClient
    oracle: WsgiClient
    clients: dict[str, tuple[str, str]]  # role -> (client_id, secret)
    metadata: Any
    key: ECKey  # the private_key_jwt clients' key
    stranger: ECKey  # a key no client registered
    account: str
    disabled_account: str
    dpop: DpopKey


def _setup(idp: Idp) -> World:
    from sqlalchemy import MetaData

    clients: dict[str, tuple[str, str]] = {}
    key = ECKey.generate_key("P-256", private=True, parameters={"kid": "k1"})
    jwks = {"keys": [key.as_dict(private=False) | {"kid": "k1"}]}

    def add(role: str, **kw: Any) -> None:
        kw.setdefault("redirect_uris", [REDIRECT])
        cid, secret = idp.add_client(name=role, **kw)
        clients[role] = (cid, secret or "")

    code_refresh_cc = ["authorization_code", "refresh_token", "client_credentials"]
    add("basic", grant_types=code_refresh_cc, scope="openid email profile permits:read")
    add("post", grant_types=["authorization_code"], auth_method="client_secret_post", scope="openid email")
    add(
        "jwt",
        grant_types=code_refresh_cc,
        auth_method="private_key_jwt",
        jwks=jwks,
        scope="openid email permits:read",
    )
    add("waived", allow_missing_pkce=True, scope="openid email permits:read")
    add("no_code", grant_types=["client_credentials"], scope="openid email permits:read")
    add("public", auth_method="none", scope="openid email permits:read")
    add(
        "fapi",
        grant_types=code_refresh_cc,
        auth_method="private_key_jwt",
        jwks=jwks,
        profile="fapi2",
        require_par=True,
        scope="openid email permits:read",
    )
    add("disabled", scope="openid email permits:read")
    with transaction(idp.sessions()) as s:
        s.execute(update(Client).where(Client.client_id == clients["disabled"][0]).values(disabled=True))
    account = idp.add_user("anna@example.org")
    disabled = idp.add_user("ben@example.org")
    with transaction(idp.sessions()) as s:
        s.execute(update(Account).where(Account.id == disabled).values(disabled=True))
    oracle_app = create_app(dataclasses.replace(idp.config, fast_paths=False))
    md = MetaData()
    md.reflect(idp.app.extensions["cityid"].engine)
    stranger = ECKey.generate_key("P-256", private=True, parameters={"kid": "k1"})
    return World(
        idp,
        WsgiClient(idp.app),
        WsgiClient(oracle_app),
        clients,
        md,
        key,
        stranger,
        account,
        disabled,
        DpopKey(),
    )


def _counting(monkeypatch: Any, module: Any, name: str) -> dict[str, int]:
    served = {"fast": 0, "all": 0}
    real = getattr(module, name)

    def counting(*args: Any) -> Any:
        resp = real(*args)
        served["all"] += 1
        served["fast"] += resp is not None
        return resp

    monkeypatch.setattr(module, name, counting)
    return served


# ----------------------------------------------------------------------------- client authentication

JWT_VARIANTS = [
    "jwt",
    "jwt_issuer_aud",
    "jwt_with_client_id",
    "jwt_other_client_id",
    "jwt_expired",
    "jwt_replayed",
    "jwt_wrong_aud",
    "jwt_iss_ne_sub",
    "jwt_no_jti",
    "jwt_wrong_key",
    "jwt_far_exp",
    "jwt_wrong_type",
    "jwt_garbage",
]
AUTH = [
    "own",
    "basic",
    "post",
    "both",
    "none",
    "basic_wrong",
    "post_wrong",
    "basic_garbage",
    "basic_nonutf8",
    "id_only",
    "basic_with_client_id",
    "basic_other_client_id",
    "jwt_and_basic",
    *JWT_VARIANTS,
]
OWN = {"basic": "basic", "post": "post", "jwt": "jwt", "waived": "basic", "no_code": "basic"}
OWN |= {"public": "id_only", "fapi": "jwt_issuer_aud", "disabled": "basic", "unknown": "basic"}


def _assertion(w: World, cid: str, variant: str) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": cid,
        "sub": cid,
        "aud": f"{w.idp.config.issuer}/token",
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(16),
    }
    key = w.key
    if variant == "jwt_issuer_aud":
        claims["aud"] = w.idp.config.issuer  # OIDC Core §9: the issuer too
    elif variant == "jwt_expired":
        claims["exp"] = now - 120  # beyond the leeway
    elif variant == "jwt_wrong_aud":
        claims["aud"] = "https://elsewhere.example/token"
    elif variant == "jwt_iss_ne_sub":
        claims["iss"] = "someone-else"
    elif variant == "jwt_no_jti":
        del claims["jti"]
    elif variant == "jwt_wrong_key":
        key = w.stranger
    elif variant == "jwt_far_exp":
        claims["exp"] = now + 7200
    elif variant == "jwt_garbage":
        return "not.a.jwt"
    return jwt.encode({"alg": "ES256", "kid": "k1"}, claims, key)


def _auth(w: World, role: str, auth: str) -> tuple[list[tuple[str, str]], dict[str, str], str | None]:
    """The form fields and headers of this client authentication; the assertion, if any."""
    cid, secret = w.clients.get(role, ("no-such-client", "no-such-secret"))
    other = w.clients["post" if role != "post" else "basic"][0]
    if auth == "own":
        auth = OWN[role]
    form: list[tuple[str, str]] = []
    headers: dict[str, str] = {}
    assertion = None
    if auth in ("basic", "both", "basic_with_client_id", "basic_other_client_id", "jwt_and_basic"):
        headers["Authorization"] = _basic(cid, secret)
    if auth in ("post", "both"):
        form += [("client_id", cid), ("client_secret", secret)]
    if auth == "basic_with_client_id":
        form.append(("client_id", cid))
    if auth == "basic_other_client_id":
        form.append(("client_id", other))
    if auth == "basic_wrong":
        headers["Authorization"] = _basic(cid, secret + "x")
    if auth == "post_wrong":
        form += [("client_id", cid), ("client_secret", "wrong")]
    if auth == "basic_garbage":
        headers["Authorization"] = "Basic !!!not-base64"
    if auth == "basic_nonutf8":
        headers["Authorization"] = "Basic " + base64.b64encode(b"\xff\xfe:\xfa").decode()
    if auth == "id_only":
        form.append(("client_id", cid))
    if auth.startswith("jwt"):
        assertion = _assertion(w, cid, "jwt" if auth == "jwt_and_basic" else auth)
        kind = "urn:ietf:params:oauth:grant-type:jwt-bearer" if auth == "jwt_wrong_type" else ASSERTION
        form += [("client_assertion_type", kind), ("client_assertion", assertion)]
        if auth == "jwt_with_client_id":
            form.append(("client_id", cid))
        if auth == "jwt_other_client_id":
            form.append(("client_id", other))
    return form, headers, assertion


def _use_up(w: World, assertion: str) -> None:
    """RFC 7523 §3 (7): the assertion is used once (a client-credentials token) before the case."""
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION,
        "client_assertion": assertion,
    }
    resp = w.oracle.post("/token", data=form)
    assert resp.status_code == 200, resp.get_data()


# ----------------------------------------------------------------------------- codes

CODE_SCOPES = ["openid email", "openid profile email", "openid", "permits:read", "openid email permits:read"]


def _make_codes(w: World, r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Two codes alike in everything but their random values: (code, grant id, code digest)."""
    owner_role = r["role"] if r["role"] in w.clients else "basic"
    if r["code"] == "other_client":
        owner_role = "post" if owner_role != "post" else "basic"
    owner = w.clients[owner_role][0]
    now = dt.datetime.now(dt.UTC)
    auth_time = int(time.time()) - 50  # one for both: OIDC Core §2 auth_time in the ID token
    out = []
    with transaction(w.idp.sessions()) as s:
        for _ in range(2):
            code, gid = secrets.token_urlsafe(32), new_id()
            full = r["grant"] == "full"
            s.add(
                Grant(
                    id=gid,
                    client_id=owner,
                    account_id=w.disabled_account if r["code"] == "disabled_account" else w.account,
                    sid="sid-1234" if full else None,
                    scope=r["scope"],
                    auth_time=auth_time if full else None,
                    acr="urn:cityid:loa:low" if full else None,
                    amr=json.dumps(["pwd"] if full else []),
                    cnf_jkt=w.dpop.jkt if r["code"] == "dpop_bound" else None,
                    revoked_at=now if r["code"] == "revoked" else None,
                    revoked_reason="test" if r["code"] == "revoked" else None,
                )
            )
            s.flush()
            challenge = r["challenge"]
            s.add(
                AuthorizationCode(
                    code_digest=w.idp.keys.token_digest(code),
                    grant_id=gid,
                    client_id=owner,
                    redirect_uri="" if r["redirect"] == "code_without" else REDIRECT,
                    scope=r["scope"],
                    nonce="n-0S6_WzA2Mj" if r["grant"] == "full" else None,
                    code_challenge=_s256(VERIFIER) if challenge == "S256" else None,
                    code_challenge_method="S256" if challenge == "S256" else None,
                    expires_at=now + dt.timedelta(seconds=-5 if r["code"] == "expired" else 60),
                    used_at=now if r["code"] == "used" else None,
                )
            )
            out.append((code, gid, w.idp.keys.token_digest(code)))
    return out


VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


CODE_FIELDS: dict[str, list[Any]] = {
    "role": ["basic", "post", "jwt", "waived", "no_code", "public", "fapi", "disabled", "unknown"],
    "auth": AUTH,
    "code": [
        "fresh",
        "used",
        "expired",
        "other_client",
        "revoked",
        "dpop_bound",
        "disabled_account",
        "missing",
        "empty",
        "garbage",
        "huge",
    ],
    "verifier": ["right", "wrong", "missing", "short", "bad_chars", "huge"],
    "challenge": ["S256", None],
    "redirect": ["right", "wrong", "missing", "code_without", "code_without_sent"],
    "scope": CODE_SCOPES,
    "grant": ["full", "bare"],
    "grant_type": ["authorization_code", "AUTHORIZATION_CODE", "", None, "refresh_token"],
    "double": [None, "grant_type", "code", "redirect_uri", "code_verifier", "client_id"],
    "extra": [None, ("scope", "openid"), ("resource", "https://api.example"), ("foo", "bar"), ("nonce", "x")],
    "query": [None, "code=x", "x=1"],
    "content_type": ["application/x-www-form-urlencoded", "application/json", "text/plain", None],
    "dpop": [None, "valid", "garbage"],
    "cert": [None, "garbage"],
}
# the fields whose faults the code exchange decides on weigh three times in the random draws
WEIGHTED = sorted(CODE_FIELDS) + 2 * ["auth", "code", "verifier", "challenge", "redirect", "role"]


def _valid(role: str = "basic", scope: str = "openid email", grant: str = "full") -> dict[str, Any]:
    """A code exchange of a proven shape."""
    return {
        "role": role,
        "auth": "own",
        "code": "fresh",
        "verifier": "right",
        "challenge": "S256",
        "redirect": "right",
        "scope": scope,
        "grant": grant,
        "grant_type": "authorization_code",
        "double": None,
        "extra": None,
        "query": None,
        "content_type": "application/x-www-form-urlencoded",
        "dpop": None,
        "cert": None,
    }


def _single_faults() -> list[dict[str, Any]]:
    """Each field's every other value, one at a time (a private_key_jwt client's for the
    assertion faults)."""
    out = []
    for name, values in CODE_FIELDS.items():
        for value in values:
            role = "jwt" if name == "auth" and str(value).startswith("jwt") else "basic"
            r = _valid(role)
            if r[name] != value:
                out.append(r | {name: value})
    return out


@st.composite
def code_exchanges(draw: Any) -> dict[str, Any]:
    """A valid code exchange of a proven shape, with 0 to 3 of its fields replaced by anything."""
    r = _valid(
        draw(st.sampled_from(["basic", "post", "jwt", "waived"])),
        draw(st.sampled_from(CODE_SCOPES)),
        draw(st.sampled_from(["full", "bare"])),
    )
    if r["role"] == "waived" and draw(st.booleans()):  # RFC 9700 §2.1.1: a legacy client without PKCE
        r["challenge"], r["verifier"] = None, "missing"
    for name in draw(st.lists(st.sampled_from(WEIGHTED), max_size=3)):
        r[name] = draw(st.sampled_from(CODE_FIELDS[name]))
    return r


def _code_request(w: World, r: dict[str, Any], code: str) -> tuple[dict[str, Any], str | None]:
    form: list[tuple[str, str]] = []
    if r["grant_type"] is not None:
        form.append(("grant_type", r["grant_type"]))
    value = {"missing": None, "empty": "", "garbage": "not-a-code", "huge": "c" * 3000}.get(r["code"], code)
    if value is not None:
        form.append(("code", value))
    redirect = {"right": REDIRECT, "wrong": "https://rp.example/other", "code_without_sent": REDIRECT}
    if r["redirect"] in redirect:
        form.append(("redirect_uri", redirect[r["redirect"]]))
    verifier = {"right": VERIFIER, "wrong": VERIFIER[:-1] + "A", "short": "abc", "bad_chars": VERIFIER + "!!"}
    verifier["huge"] = "v" * 200
    if r["verifier"] in verifier:
        form.append(("code_verifier", verifier[r["verifier"]]))
    auth_form, headers, assertion = _auth(w, r["role"], r["auth"])
    form += auth_form
    if r["double"]:
        form += [(k, v) for k, v in list(form) if k == r["double"]][:1] or [(r["double"], "x")]
    if r["extra"]:
        form.append(r["extra"])
    if r["dpop"] == "valid":
        headers["DPoP"] = w.dpop.proof("POST", f"{w.idp.config.issuer}/token")
    elif r["dpop"] == "garbage":
        headers["DPoP"] = "not.a.proof"
    if r["cert"]:
        headers[MTLS_HEADER] = "-----BEGIN CERTIFICATE-----%0Agarbage%0A-----END CERTIFICATE-----"
    body = urlencode(form) if r["content_type"] != "application/json" else json.dumps(dict(form))
    if r["content_type"]:
        headers["Content-Type"] = r["content_type"]
    path = "/token" + (f"?{r['query']}" if r["query"] else "")
    return {"path": path, "data": body, "headers": headers}, assertion


# ----------------------------------------------------------------------------- comparing


def _placeholders(x: Any, names: dict[str, str]) -> Any:
    """``x`` with each random value of this run replaced by its placeholder."""
    if isinstance(x, str):
        for value, name in names.items():
            x = x.replace(value, name)
        return x
    if isinstance(x, tuple):
        return tuple(_placeholders(v, names) for v in x)
    if isinstance(x, list):
        return [_placeholders(v, names) for v in x]
    if isinstance(x, dict):
        return {k: _placeholders(v, names) for k, v in x.items()}
    return x


def _token_answer(w: World, resp: Any, names: dict[str, str]) -> dict[str, Any]:
    """Status, headers and body of a token response, its tokens read as claims (random values
    and times aside); adds the refresh token's digest to ``names``."""
    try:
        data = json.loads(resp.get_data())
    except ValueError:
        data = {"<raw>": resp.get_data().decode("latin-1")}
    out: dict[str, Any] = {
        "status": resp.status_code,
        "headers": {h: resp.headers.get(h) for h in ANSWER_HEADERS},
        "dpop_nonce": "DPoP-Nonce" in resp.headers,
    }
    if isinstance(data, dict):
        access = data.pop("access_token", None)
        if isinstance(access, str):
            out["token_header"], out["claims"] = _claims_of(access)
        refresh = data.get("refresh_token")
        if isinstance(refresh, str):
            names[w.idp.keys.token_digest(refresh)] = "<refresh-token>"
            data["refresh_token"] = "<refresh-token>"
        id_token = data.pop("id_token", None)
        if isinstance(id_token, str):
            obj = jws.extract_compact(id_token.encode())
            claims = json.loads(obj.payload)
            # OIDC Core §3.1.3.6: at_hash is the left half of the access token's hash
            half = hashlib.sha256(str(access).encode()).digest()[:16]
            claims["at_hash"] = claims.get("at_hash") == base64.urlsafe_b64encode(half).rstrip(b"=").decode()
            if isinstance(claims.get("auth_time"), int) and abs(claims["auth_time"] - time.time()) < 30:
                claims["auth_time"] = "<about now>"
            out["id_token_claims"] = {k: v for k, v in claims.items() if k not in VOLATILE_CLAIMS}
            out["id_token_lifetime"] = claims["exp"] - claims["iat"]
            out["id_token_header"] = obj.headers()
    out["body"] = data
    return _placeholders(out, names)


def _rows(diff: Any, names: dict[str, str]) -> Any:
    """The rows a request changed, with this run's random values read as placeholders (a replay
    key holds a digest of the random jti)."""
    out = {}
    for table, (added, removed) in diff.items():
        if table == "idp_seen_jti":
            added = [("<replay key>", *r[1:]) for r in added]
            removed = [("<replay key>", *r[1:]) for r in removed]
        out[table] = (_placeholders(added, names), _placeholders(removed, names))
    return out


def _prepared(w: World, r: dict[str, Any], code: tuple[str, str, str]) -> dict[str, Any]:
    req, assertion = _code_request(w, r, code[0])
    if r["auth"] == "jwt_replayed" and r["role"] == "jwt" and assertion:
        _use_up(w, assertion)
    return req


def _side_by_side(w: World, fast_req: dict[str, Any], oracle_req: dict[str, Any], names: list[Any]) -> Any:
    """Each request through its app, one after the other (three snapshots of the database):
    for each, (answer, rows changed, audit entries) with its random values as placeholders."""
    out = []
    before, seq = _state(w)
    for app, req, mine in ((w.fast, fast_req, names[0]), (w.oracle, oracle_req, names[1])):
        resp = app.post(req["path"], data=req["data"], headers=req["headers"])
        answer = _token_answer(w, resp, mine) if req["path"].startswith("/token") else _full_answer(resp)
        after, seq_after = _state(w)
        audit = _audit_since(w, seq)
        out.append((answer, _rows(_diff(before, after), mine), _placeholders(audit, mine)))
        before, seq = after, seq_after
    return out


def test_code_exchange_fast_path_answers_exactly_as_authlib(idp_factory: Any, monkeypatch: Any) -> None:
    w = _setup(idp_factory(mtls_client_cert_header=MTLS_HEADER))
    served = _counting(monkeypatch, fast_code, "code_exchange")
    cases = {"all": 0}

    def check(r: dict[str, Any]) -> None:
        cases["all"] += 1
        mine, theirs = _make_codes(w, r)
        names = [{c[1]: "<grant>", c[2]: "<code>"} for c in (mine, theirs)]
        fast, oracle = _side_by_side(w, _prepared(w, r, mine), _prepared(w, r, theirs), names)
        assert fast[0] == oracle[0], (r, fast[0], oracle[0])  # status, headers, body, token claims
        assert fast[1] == oracle[1], (r, fast[1], oracle[1])  # database rows
        assert fast[2] == oracle[2], (r, fast[2], oracle[2])  # audit entries

    run = given(r=code_exchanges())(check)
    for fault in _single_faults():  # every single fault, then random combinations of them
        run = example(r=fault)(run)
    settings(SETTINGS, max_examples=CODE_EXAMPLES)(run)()
    print("code exchange cases", cases["all"], "answered by the fast path", served["fast"])
    assert cases["all"] >= len(_single_faults()) + CODE_EXAMPLES // 2, cases
    assert served["fast"] >= cases["all"] // 8, served


def test_code_exchange_takes_the_fast_path_for_each_authentication_method(
    idp_factory: Any, monkeypatch: Any
) -> None:
    """The proven shapes (basic, post, private_key_jwt) are answered by the fast path, a refresh
    token and an ID token included, and the code is single use; the setting turns it off."""
    w = _setup(idp_factory())
    served = _counting(monkeypatch, fast_code, "code_exchange")
    for role in ("basic", "post", "jwt"):
        r = _valid(role)
        code = _make_codes(w, r)[0]
        req, _ = _code_request(w, r, code[0])
        resp = w.fast.post(req["path"], data=req["data"], headers=req["headers"])
        assert resp.status_code == 200, resp.get_data()
        body = resp.get_json()
        assert "id_token" in body and ("refresh_token" in body) == (role != "post")
        req, _ = _code_request(w, r, code[0])
        again = w.fast.post(req["path"], data=req["data"], headers=req["headers"])
        assert again.status_code == 400 and again.get_json()["error"] == "invalid_grant"  # RFC 6749 §4.1.2
    assert served["fast"] == 3, served  # the replays: Authlib's
    r = _valid()
    req, _ = _code_request(w, r, _make_codes(w, r)[0][0])
    assert w.oracle.post(req["path"], data=req["data"], headers=req["headers"]).status_code == 200
    assert served["fast"] == 3  # fast_paths = false: Authlib alone


# ----------------------------------------------------------------------------- private_key_jwt


JWT_FIELDS: dict[str, Any] = {
    "role": st.sampled_from(["jwt", "fapi", "basic", "unknown"]),
    "auth": st.sampled_from(JWT_VARIANTS),
    "scope": st.sampled_from([None, "permits:read", "nope", "openid permits:read"]),
    "token": st.sampled_from(["own", "other", "garbage"]),
    "double": st.sampled_from([None, "client_assertion", "client_assertion_type", "client_id"]),
}


@st.composite
def jwt_requests(draw: Any) -> dict[str, Any]:
    """A client-credentials token request and an introspection of a private_key_jwt client, valid,
    with 0 to 2 of their fields replaced by anything."""
    r: dict[str, Any] = {
        "role": "jwt",
        "auth": draw(st.sampled_from(["jwt", "jwt_issuer_aud", "jwt_with_client_id"])),
        "scope": draw(st.sampled_from([None, "permits:read"])),
        "token": "own",
        "double": None,
    }
    for name in draw(st.lists(st.sampled_from(sorted(JWT_FIELDS)), max_size=2, unique=True)):
        r[name] = draw(JWT_FIELDS[name])
    return r


def _jwt_form(w: World, r: dict[str, Any], first: list[tuple[str, str]]) -> tuple[str, str | None]:
    form, _, assertion = _auth(w, r["role"], r["auth"])
    form = first + form
    if r["double"]:
        form += [(k, v) for k, v in form if k == r["double"]][:1]
    return urlencode(form), assertion


def test_private_key_jwt_in_the_fast_paths_answers_exactly_as_authlib(
    idp_factory: Any, monkeypatch: Any
) -> None:
    """RFC 7523 §2.2/§3 and OIDC Core §9 at /token (client credentials) and /introspect."""
    w = _setup(idp_factory())
    tokens = {"own": _cc_token(w, "jwt"), "other": _cc_token(w, "basic"), "garbage": "not-a-token"}
    served_cc = _counting(monkeypatch, fast_paths, "client_credentials")
    served_in = _counting(monkeypatch, fast_paths, "introspection")
    cases = {"all": 0}

    def prepared(r: dict[str, Any], path: str, first: list[tuple[str, str]]) -> dict[str, Any]:
        body, assertion = _jwt_form(w, r, first)
        if r["auth"] == "jwt_replayed" and r["role"] == "jwt" and assertion:
            _use_up(w, assertion)
        return {"path": path, "data": body, "headers": {"Content-Type": "application/x-www-form-urlencoded"}}

    @settings(SETTINGS, max_examples=JWT_EXAMPLES)
    @given(r=jwt_requests())
    def check(r: dict[str, Any]) -> None:
        cases["all"] += 1
        cc = [("grant_type", "client_credentials")] + ([("scope", r["scope"])] if r["scope"] else [])
        introspect = [("token", tokens[r["token"]])]
        for path, first in (("/token", cc), ("/introspect", introspect)):
            requests = prepared(r, path, first), prepared(r, path, first)
            fast, oracle = _side_by_side(w, *requests, [{}, {}])
            assert fast == oracle, (path, r, fast, oracle)

    check()
    print("private_key_jwt cases", cases["all"], "client credentials", served_cc, "introspection", served_in)
    assert served_cc["fast"] >= JWT_EXAMPLES // 6 and served_in["fast"] >= JWT_EXAMPLES // 10, (
        served_cc,
        served_in,
    )


def _cc_token(w: World, role: str) -> str:
    form, headers, _ = _auth(w, role, "own")
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    body = urlencode([("grant_type", "client_credentials"), ("scope", "permits:read"), *form])
    resp = w.oracle.post("/token", data=body, headers=headers)
    assert resp.status_code == 200, resp.get_data()
    return str(resp.get_json()["access_token"])


# ----------------------------------------------------------------------------- a lost race


@pytest.mark.postgresql_only
def test_a_code_redeemed_while_the_fast_path_claims_it_is_answered_as_authlib_answers_a_replay_rfc6749_4_1_2(
    idp_factory: Any, monkeypatch: Any
) -> None:
    """The fast path has read the code as unused when another transaction redeems it: its claim
    (the single-use UPDATE) loses, and it rolls back its writes (the private_key_jwt assertion's
    jti too) and hands over: Authlib finds the code used, refuses with invalid_grant (not the
    invalid_client a kept jti would give) and revokes the family."""
    import threading

    idp = idp_factory()
    w = _setup(idp)
    engine = w.idp.app.extensions["cityid"].engine
    served = _counting(monkeypatch, fast_code, "code_exchange")
    r = _valid("jwt")
    code, gid, digest = _make_codes(w, r)[0]
    req = _prepared(w, r, (code, gid, digest))
    codes = AuthorizationCode.__table__
    answer: dict[str, Any] = {}
    with engine.connect() as other:
        tx = other.begin()  # the concurrent redemption, holding the code's row
        other.execute(
            update(codes).where(codes.c.code_digest == digest).values(used_at=dt.datetime.now(dt.UTC))
        )

        def exchange() -> None:
            answer["resp"] = w.fast.post(req["path"], data=req["data"], headers=req["headers"])

        thread = threading.Thread(target=exchange)
        thread.start()
        # until the fast path's claim waits for that row. Each poll is a transaction of its own:
        # PostgreSQL keeps the list of backends in pg_stat_activity stable within a transaction,
        # so a backend the request opened after the first poll would never be seen in one.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watch:
            waiting = text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event = 'transactionid'"
            )
            deadline = time.monotonic() + 20
            while watch.execute(waiting).scalar() == 0:
                assert thread.is_alive(), f"answered before claiming: {answer.get('resp')!r}"
                assert time.monotonic() < deadline, "the fast path never claimed the code"
                time.sleep(0.05)
        tx.commit()
    thread.join(20)
    resp = answer["resp"]
    assert served == {"all": 1, "fast": 0}  # handed over
    assert resp.status_code == 400, resp.get_data()
    assert resp.get_json() == {"error": "invalid_grant", "error_description": "Invalid 'code' in request."}
    with transaction(w.idp.sessions()) as s:
        grant = s.get(Grant, gid)
        assert grant is not None and grant.revoked_reason == "authorization code reused"
