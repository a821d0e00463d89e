"""Authlib is the oracle of the fast paths (idp.oauth.fast_paths).

Hypothesis generates token requests, valid and hostile (wrong, malformed, missing or doubled
client authentication, unknown, disabled, public, FAPI 2.0 and private_key_jwt clients, clients
without the grant, bad, oversized and odd scopes, unknown and repeated parameters, query strings,
other content types, DPoP proofs and client certificates). Each request runs against two apps on
the same database, one with ``fast_paths = true`` and one with ``fast_paths = false`` (Authlib
alone), one after the other, on the same state (the only state either changes for these
requests is the audit log, which no decision reads). Status, headers that matter, the JSON body
(all but the random access token), the access token's header and claims (all but jti and the
times, whose difference must match), the database rows each request adds or changes and the
audit entries must be identical.

Cases: EXAMPLES (200) client-credentials and introspection requests and half as many userinfo
requests on SQLite; on PostgreSQL half of each (EXAMPLES_POSTGRESQL), where every snapshot of the
database state costs a round trip per table: SQLite gives the breadth, PostgreSQL proves the same
answers on its dialect. The test also insists that the fast path really answered a good share of
them (else it would prove nothing).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jws
from joserfc.jwk import ECKey
from sqlalchemy import DateTime, MetaData, select, update
from werkzeug.test import Client as WsgiClient

import idp.oauth.fast_paths as fast_paths
from db import transaction
from idp.app import create_app
from idp.models import Client
from tests.idp.conftest import Idp
from tests.idp.dpop_client import DpopKey

EXAMPLES = 200
EXAMPLES_POSTGRESQL = 100


def _examples(w: Any) -> int:
    return EXAMPLES if w.idp.config.database_url.startswith("sqlite") else EXAMPLES_POSTGRESQL


MTLS_HEADER = "X-SSL-Client-Cert"
VOLATILE_CLAIMS = ("jti", "iat", "exp", "nbf")
ANSWER_HEADERS = (
    "Content-Type",
    "Cache-Control",
    "Pragma",
    "WWW-Authenticate",
    "Access-Control-Allow-Origin",
)


@dataclasses.dataclass
class World:
    idp: Idp
    fast: WsgiClient
    oracle: WsgiClient
    clients: dict[str, tuple[str, str]]  # role -> (client_id, secret)
    metadata: MetaData
    dpop: DpopKey


def _setup(idp: Idp) -> World:
    clients: dict[str, tuple[str, str]] = {}

    def add(role: str, **kw: Any) -> None:
        cid, secret = idp.add_client(name=role, **kw)
        clients[role] = (cid, secret or "")

    add("basic", grant_types=["client_credentials"], scope="permits:read permits:write openid")
    add("post", grant_types=["client_credentials"], auth_method="client_secret_post", scope="permits:read")
    add("no_cc", scope="openid profile", redirect_uris=["https://rp.example/cb"])
    add("disabled", grant_types=["client_credentials"], scope="permits:read")
    key = ECKey.generate_key("P-256", private=True)
    jwks = {"keys": [key.as_dict(private=False) | {"kid": "k1"}]}
    add("jwt", grant_types=["client_credentials"], auth_method="private_key_jwt", scope="x", jwks=jwks)
    add("public", auth_method="none", redirect_uris=["https://spa.example/cb"], scope="openid")
    with transaction(idp.sessions()) as s:
        s.execute(update(Client).where(Client.client_id == clients["disabled"][0]).values(disabled=True))
    oracle_app = create_app(dataclasses.replace(idp.config, fast_paths=False))
    md = MetaData()
    md.reflect(idp.app.extensions["cityid"].engine)
    return World(idp, WsgiClient(idp.app), WsgiClient(oracle_app), clients, md, DpopKey())


# ----------------------------------------------------------------------------- database state


def _normal(v: Any) -> Any:
    return "<time>" if isinstance(v, dt.datetime) else v


def _snapshot_plan(w: Any) -> list[tuple[str, str, frozenset[int]]]:
    """(table, its SELECT, the positions of its time columns) for every table but the audit log:
    plain SQL on the driver, so that a snapshot of the whole database stays cheap."""
    plan = _PLANS.get(id(w.metadata))
    if plan is None:
        quote = w.idp.app.extensions["cityid"].engine.dialect.identifier_preparer.quote
        plan = []
        for name, table in w.metadata.tables.items():
            if name.startswith("audit_") or name == "alembic_version":
                continue
            cols = list(table.c)
            times = frozenset(i for i, c in enumerate(cols) if isinstance(c.type, DateTime))
            plan.append((name, f"SELECT {', '.join(quote(c.name) for c in cols)} FROM {quote(name)}", times))
        _PLANS[id(w.metadata)] = plan
    return plan


_PLANS: dict[int, list[tuple[str, str, frozenset[int]]]] = {}


def _state(w: Any) -> tuple[dict[str, list[tuple[Any, ...]]], int]:
    """Every row of every table but the audit log (normalised times), and the audit log's length."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    engine = w.idp.app.extensions["cityid"].engine
    with engine.connect() as conn:
        for name, sql, times in _snapshot_plan(w):
            rows[name] = sorted(
                (
                    tuple("<time>" if i in times and v is not None else _normal(v) for i, v in enumerate(r))
                    for r in conn.exec_driver_sql(sql)
                ),
                key=repr,
            )
        seq = conn.exec_driver_sql("SELECT max(seq) FROM audit_event").scalar() or 0
    return rows, int(seq)


def _audit_since(w: World, seq: int) -> list[tuple[Any, ...]]:
    t = w.metadata.tables["audit_event"]
    engine = w.idp.app.extensions["cityid"].engine
    with engine.connect() as conn:
        return [
            (r.actor, r.action, r.outcome, r.subject, r.reason, json.loads(r.details or "{}"))
            for r in conn.execute(select(t).where(t.c.seq > seq).order_by(t.c.seq))
        ]


def _diff(before: dict[str, list[tuple[Any, ...]]], after: dict[str, list[tuple[Any, ...]]]) -> Any:
    out = {}
    for name in after:
        b, a = before.get(name, []), after[name]
        added = [r for r in a if r not in b]
        removed = [r for r in b if r not in a]
        if added or removed:
            out[name] = (added, removed)
    return out


# ----------------------------------------------------------------------------- the answer


def _claims_of(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    obj = jws.extract_compact(token.encode())
    claims = json.loads(obj.payload)
    fixed = {k: v for k, v in claims.items() if k not in VOLATILE_CLAIMS}
    if "exp" in claims and "iat" in claims:
        fixed["lifetime"] = claims["exp"] - claims["iat"]
    header = {k: v for k, v in obj.headers().items()}
    return header, fixed


def _answer(resp: Any) -> dict[str, Any]:
    body = resp.get_data()
    try:
        data = json.loads(body)
    except ValueError:
        data = {"<raw>": body.decode("latin-1")}
    out: dict[str, Any] = {
        "status": resp.status_code,
        "headers": {h: resp.headers.get(h) for h in ANSWER_HEADERS},
        "dpop_nonce": "DPoP-Nonce" in resp.headers,
    }
    if isinstance(data, dict) and isinstance(data.get("access_token"), str):
        header, claims = _claims_of(data["access_token"])
        out["token_header"], out["claims"] = header, claims
        data = {k: v for k, v in data.items() if k != "access_token"}
    out["body"] = data
    return out


# ----------------------------------------------------------------------------- requests

ROLES = ["basic", "post", "no_cc", "disabled", "jwt", "public", "unknown"]
AUTH = [
    "basic",
    "post",
    "both",
    "none",
    "basic_wrong",
    "post_wrong",
    "basic_garbage",
    "basic_nonutf8",
    "basic_noscheme",
    "bearer",
    "id_only",
]
SCOPES = st.one_of(
    st.none(),
    st.sampled_from(
        ["permits:read", "permits:read permits:write", "openid", "nope", "permits:read nope", ""]
    ),
    st.text(min_size=0, max_size=40),
    st.just("a" * 3000),  # oversized (idp.oauth.server.MAX_PARAM)
)
GRANTS = st.sampled_from(
    [
        "client_credentials",
        "client_credentials",
        "client_credentials",
        "refresh_token",
        "password",
        "",
        "CLIENT_CREDENTIALS",
        None,
    ]
)


FIELDS: dict[str, Any] = {
    "role": st.sampled_from(ROLES),
    "auth": st.sampled_from(AUTH),
    "grant": GRANTS,
    "scope": SCOPES,
    "double": st.sampled_from([None, "grant_type", "scope", "client_id"]),
    "extra": st.sampled_from(
        [
            None,
            ("resource", "https://api.example"),
            ("foo", "bar"),
            ("client_assertion_type", "urn:x"),
            ("code", "c"),
        ]
    ),
    "query": st.sampled_from([None, "scope=permits:read", "x=1"]),
    "content_type": st.sampled_from(
        ["application/x-www-form-urlencoded", "application/json", "text/plain", None]
    ),
    "dpop": st.sampled_from([None, "valid", "garbage"]),
    "cert": st.sampled_from([None, "garbage"]),
}


@st.composite
def token_requests(draw: Any) -> dict[str, Any]:
    """A valid request of a proven shape, with 0 to 3 of its fields replaced by anything."""
    role = draw(st.sampled_from(["basic", "post"]))
    r: dict[str, Any] = {
        "role": role,
        "auth": role,
        "grant": "client_credentials",
        "scope": draw(st.sampled_from([None, "permits:read", "permits:read permits:write", ""])),
        "double": None,
        "extra": None,
        "query": None,
        "content_type": "application/x-www-form-urlencoded",
        "dpop": None,
        "cert": None,
    }
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True)):
        r[name] = draw(FIELDS[name])
    return r


def _build(w: World, r: dict[str, Any]) -> dict[str, Any]:
    cid, secret = w.clients.get(r["role"], ("no-such-client", "no-such-secret"))
    form: list[tuple[str, str]] = []
    if r["grant"] is not None:
        form.append(("grant_type", r["grant"]))
    if r["scope"] is not None:
        form.append(("scope", r["scope"]))
    headers: dict[str, str] = {}
    auth = r["auth"]

    def basic(user: str, pw: str) -> str:
        return "Basic " + base64.b64encode(f"{quote(user, safe='')}:{quote(pw, safe='')}".encode()).decode()

    if auth in ("basic", "both"):
        headers["Authorization"] = basic(cid, secret)
    if auth in ("post", "both"):
        form += [("client_id", cid), ("client_secret", secret)]
    if auth == "basic_wrong":
        headers["Authorization"] = basic(cid, secret + "x")
    if auth == "post_wrong":
        form += [("client_id", cid), ("client_secret", "wrong")]
    if auth == "basic_garbage":
        headers["Authorization"] = "Basic !!!not-base64"
    if auth == "basic_nonutf8":
        headers["Authorization"] = "Basic " + base64.b64encode(b"\xff\xfe:\xfa").decode()
    if auth == "basic_noscheme":
        headers["Authorization"] = base64.b64encode(f"{cid}:{secret}".encode()).decode()
    if auth == "bearer":
        headers["Authorization"] = "Bearer abc"
    if auth == "id_only":
        form.append(("client_id", cid))
    if r["double"]:
        form += [(k, v) for k, v in list(form) if k == r["double"]][:1] or [(r["double"], "x")]
    if r["extra"]:
        form.append(r["extra"])
    url = "/token" + (f"?{r['query']}" if r["query"] else "")
    if r["dpop"] == "valid":
        headers["DPoP"] = w.dpop.proof("POST", f"{w.idp.config.issuer}/token")
    elif r["dpop"] == "garbage":
        headers["DPoP"] = "not.a.proof"
    if r["cert"]:
        headers[MTLS_HEADER] = "-----BEGIN CERTIFICATE-----%0Agarbage%0A-----END CERTIFICATE-----"
    body = urlencode(form) if r["content_type"] != "application/json" else json.dumps(dict(form))
    if r["content_type"]:
        headers["Content-Type"] = r["content_type"]
    return {"path": url, "data": body, "headers": headers}


def _run(w: World, client: WsgiClient, req: dict[str, Any]) -> tuple[dict[str, Any], Any, list[Any]]:
    before, seq = _state(w)
    resp = client.post(req["path"], data=req["data"], headers=req["headers"])
    answer = _answer(resp)
    after, _ = _state(w)
    return answer, _diff(before, after), _audit_since(w, seq)


def test_client_credentials_fast_path_answers_exactly_as_authlib(idp_factory: Any, monkeypatch: Any) -> None:
    w = _setup(idp_factory(mtls_client_cert_header=MTLS_HEADER))
    served = {"fast": 0, "all": 0}
    real = fast_paths.token

    def counting(*args: Any) -> Any:
        resp = real(*args)
        served["fast"] += resp is not None
        return resp

    monkeypatch.setattr(fast_paths, "token", counting)

    @settings(
        max_examples=_examples(w),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(r=token_requests())
    def check(r: dict[str, Any]) -> None:
        served["all"] += 1
        if r["dpop"] == "valid":  # the same proof twice would be a replay on the second path
            req_fast, req_oracle = _build(w, r), _build(w, r)
        else:
            req_fast = req_oracle = _build(w, r)
        fast = _run(w, w.fast, req_fast)
        oracle = _run(w, w.oracle, req_oracle)
        assert fast[0] == oracle[0], (r, fast[0], oracle[0])  # status, headers, body, token
        assert fast[1] == oracle[1], (r, fast[1], oracle[1])  # database rows
        assert fast[2] == oracle[2], (r, fast[2], oracle[2])  # audit entries

    check()
    # the fast path must have answered a real share of the cases, or it was never compared
    print("fast-path cases", served)
    assert served["fast"] >= _examples(w) // 10, served


def test_fast_path_answers_the_plain_client_credentials_requests(idp_factory: Any, monkeypatch: Any) -> None:
    """The proven shapes really take the fast path (basic and post), and the setting turns it off."""
    w = _setup(idp_factory())
    calls: list[bool] = []
    real = fast_paths.client_credentials

    def spy(*args: Any) -> Any:
        resp = real(*args)
        calls.append(resp is not None)
        return resp

    monkeypatch.setattr(fast_paths, "client_credentials", spy)
    for role, auth in (("basic", "basic"), ("post", "post")):
        r = {
            "role": role,
            "auth": auth,
            "grant": "client_credentials",
            "scope": "permits:read",
            "double": None,
            "extra": None,
            "query": None,
            "content_type": "application/x-www-form-urlencoded",
            "dpop": None,
            "cert": None,
        }
        resp = w.fast.post(**_build(w, r))
        assert resp.status_code == 200, resp.get_data()
    assert calls == [True, True]
    resp = w.oracle.post(**_build(w, r))
    assert resp.status_code == 200 and calls == [True, True]  # fast_paths = false: Authlib alone


# ----------------------------------------------------------------------------- introspection


def _issue(w: World, role: str) -> str:
    cid, secret = w.clients[role]
    data = {"grant_type": "client_credentials", "scope": "permits:read"}
    if role == "post":
        data |= {"client_id": cid, "client_secret": secret}
        resp = w.oracle.post("/token", data=data)
    else:
        resp = w.oracle.post("/token", data=data, headers={"Authorization": _basic(cid, secret)})
    assert resp.status_code == 200, resp.get_data()
    return str(resp.get_json()["access_token"])


def _basic(user: str, pw: str) -> str:
    return "Basic " + base64.b64encode(f"{quote(user, safe='')}:{quote(pw, safe='')}".encode()).decode()


INTROSPECT_FIELDS: dict[str, Any] = {
    "role": st.sampled_from(ROLES),
    "auth": st.sampled_from(AUTH),
    "token": st.sampled_from(["own", "other", "revoked", "garbage", "empty", "huge", "missing", "tampered"]),
    "hint": st.sampled_from([None, "access_token", "refresh_token", "foo", ""]),
    "double": st.sampled_from([None, "token", "token_type_hint"]),
    "extra": st.sampled_from([None, ("foo", "bar"), ("client_assertion", "x.y.z")]),
    "query": st.sampled_from([None, "token=x"]),
    "content_type": st.sampled_from(["application/x-www-form-urlencoded", "application/json", None]),
}


@st.composite
def introspection_requests(draw: Any) -> dict[str, Any]:
    """A valid introspection of the client's own token, with 0 to 3 fields replaced by anything."""
    role = draw(st.sampled_from(["basic", "post"]))
    r: dict[str, Any] = {
        "role": role,
        "auth": role,
        "token": "own",
        "hint": draw(st.sampled_from([None, "access_token"])),
        "double": None,
        "extra": None,
        "query": None,
        "content_type": "application/x-www-form-urlencoded",
    }
    for name in draw(st.lists(st.sampled_from(sorted(INTROSPECT_FIELDS)), max_size=3, unique=True)):
        r[name] = draw(INTROSPECT_FIELDS[name])
    return r


def _introspection_request(w: World, r: dict[str, Any], tokens: dict[str, str]) -> dict[str, Any]:
    cid, secret = w.clients.get(r["role"], ("no-such-client", "no-such-secret"))
    own = tokens.get(r["role"], tokens["basic"])
    value = {
        "own": own,
        "other": tokens["post"] if r["role"] != "post" else tokens["basic"],
        "revoked": tokens["revoked"],
        "garbage": "not-a-token",
        "empty": "",
        "huge": "a" * 5000,
        "missing": None,
        "tampered": own[:-4] + ("AAAA" if not own.endswith("AAAA") else "BBBB"),
    }[r["token"]]
    form: list[tuple[str, str]] = []
    if value is not None:
        form.append(("token", value))
    if r["hint"] is not None:
        form.append(("token_type_hint", r["hint"]))
    headers: dict[str, str] = {}
    auth = r["auth"]
    if auth in ("basic", "both"):
        headers["Authorization"] = _basic(cid, secret)
    if auth in ("post", "both"):
        form += [("client_id", cid), ("client_secret", secret)]
    if auth == "basic_wrong":
        headers["Authorization"] = _basic(cid, secret + "x")
    if auth == "post_wrong":
        form += [("client_id", cid), ("client_secret", "wrong")]
    if auth == "basic_garbage":
        headers["Authorization"] = "Basic !!!not-base64"
    if auth == "basic_nonutf8":
        headers["Authorization"] = "Basic " + base64.b64encode(b"\xff\xfe:\xfa").decode()
    if auth == "basic_noscheme":
        headers["Authorization"] = base64.b64encode(f"{cid}:{secret}".encode()).decode()
    if auth == "bearer":
        headers["Authorization"] = f"Bearer {own}"
    if auth == "id_only":
        form.append(("client_id", cid))
    if r["double"]:
        form += [(k, v) for k, v in list(form) if k == r["double"]][:1] or [(r["double"], "x")]
    if r["extra"]:
        form.append(r["extra"])
    body = urlencode(form) if r["content_type"] != "application/json" else json.dumps(dict(form))
    if r["content_type"]:
        headers["Content-Type"] = r["content_type"]
    path = "/introspect" + (f"?{r['query']}" if r["query"] else "")
    return {"path": path, "data": body, "headers": headers}


def _full_answer(resp: Any) -> dict[str, Any]:
    """Status, every header but Date, the body."""
    headers = sorted((k, v) for k, v in resp.headers.items() if k not in ("Date", "Server"))
    return {"status": resp.status_code, "headers": headers, "body": resp.get_data()}


def test_introspection_fast_path_answers_exactly_as_authlib(idp_factory: Any, monkeypatch: Any) -> None:
    w = _setup(idp_factory())
    tokens = {"basic": _issue(w, "basic"), "post": _issue(w, "post"), "revoked": _issue(w, "basic")}
    cid, secret = w.clients["basic"]
    revoked = w.oracle.post(
        "/revoke", data={"token": tokens["revoked"]}, headers={"Authorization": _basic(cid, secret)}
    )
    assert revoked.status_code == 200
    served = {"fast": 0, "all": 0}
    real = fast_paths.introspection

    def counting(*args: Any) -> Any:
        resp = real(*args)
        served["fast"] += resp is not None
        return resp

    monkeypatch.setattr(fast_paths, "introspection", counting)

    @settings(
        max_examples=_examples(w),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(r=introspection_requests())
    def check(r: dict[str, Any]) -> None:
        served["all"] += 1
        req = _introspection_request(w, r, tokens)
        before, seq = _state(w)
        fast = _full_answer(w.fast.post(req["path"], data=req["data"], headers=req["headers"]))
        mid, seq2 = _state(w)
        fast_audit = _audit_since(w, seq)
        oracle = _full_answer(w.oracle.post(req["path"], data=req["data"], headers=req["headers"]))
        after, _ = _state(w)
        assert fast == oracle, (r, fast, oracle)  # status, every header, the body's bytes
        assert _diff(before, mid) == _diff(mid, after), r  # database rows
        assert fast_audit == _audit_since(w, seq2), r  # audit entries

    check()
    print("introspection fast-path cases", served)
    assert served["fast"] >= _examples(w) // 10, served


# ----------------------------------------------------------------------------- userinfo

USERINFO_FIELDS: dict[str, Any] = {
    "token": st.sampled_from(
        ["full", "openid_only", "no_openid", "machine", "revoked", "garbage", "tampered", "none"]
    ),
    "scheme": st.sampled_from(["Bearer", "bearer", "DPoP", "Basic", ""]),
    "dpop": st.sampled_from([None, "garbage"]),
    "query": st.sampled_from([None, "access_token=x"]),
    "method": st.sampled_from(["GET", "POST"]),
}


@st.composite
def userinfo_requests(draw: Any) -> dict[str, Any]:
    """A valid userinfo request (Bearer, scope openid), with 0 to 3 fields replaced by anything."""
    r: dict[str, Any] = {
        "token": draw(st.sampled_from(["full", "openid_only"])),
        "scheme": "Bearer",
        "dpop": None,
        "query": None,
        "method": "GET",
    }
    for name in draw(st.lists(st.sampled_from(sorted(USERINFO_FIELDS)), max_size=3, unique=True)):
        r[name] = draw(USERINFO_FIELDS[name])
    return r


def test_userinfo_fast_path_answers_exactly_as_the_view(idp_factory: Any, monkeypatch: Any) -> None:
    from tests.idp.test_code_flow import _tokens

    idp = idp_factory()
    w = _setup(idp)
    cid, secret = idp.add_client(
        name="Portal", redirect_uris=["http://127.0.0.1:9/cb"], scope="openid email profile permits:read"
    )
    idp.add_user("anna@example.org")
    full = _tokens(idp, cid, secret, "anna@example.org", "openid email profile")["access_token"]
    only = _tokens(idp, cid, secret, "anna@example.org", "openid")["access_token"]
    no_openid = _tokens(idp, cid, secret, "anna@example.org", "openid permits:read")
    # a narrowed refresh gives an access token without openid (RFC 6749 §6)
    narrowed = w.oracle.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": no_openid["refresh_token"],
            "scope": "permits:read",
        },
        headers={"Authorization": _basic(cid, str(secret))},
    )
    assert narrowed.status_code == 200, narrowed.get_data()
    revoked = _tokens(idp, cid, secret, "anna@example.org", "openid email")["access_token"]
    assert (
        w.oracle.post(
            "/revoke", data={"token": revoked}, headers={"Authorization": _basic(cid, str(secret))}
        ).status_code
        == 200
    )
    tokens = {
        "full": full,
        "openid_only": only,
        "no_openid": narrowed.get_json()["access_token"],
        "machine": _issue(w, "basic"),
        "revoked": revoked,
        "garbage": "not-a-token",
        "tampered": full[:-4] + ("AAAA" if not full.endswith("AAAA") else "BBBB"),
        "none": "",
    }
    served = {"fast": 0, "all": 0}
    real = fast_paths.userinfo

    def counting(*args: Any) -> Any:
        resp = real(*args)
        served["fast"] += resp is not None
        return resp

    monkeypatch.setattr(fast_paths, "userinfo", counting)

    @settings(
        max_examples=_examples(w) // 2,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(r=userinfo_requests())
    def check(r: dict[str, Any]) -> None:
        served["all"] += 1
        headers = {}
        if r["token"] != "none" or r["scheme"]:
            headers["Authorization"] = f"{r['scheme']} {tokens[r['token']]}".strip()
        if r["dpop"]:
            headers["DPoP"] = "not.a.proof"
        path = "/userinfo" + (f"?{r['query']}" if r["query"] else "")
        before, seq = _state(w)
        fast = _full_answer(w.fast.open(path, method=r["method"], headers=headers))
        mid, seq2 = _state(w)
        fast_audit = _audit_since(w, seq)
        oracle = _full_answer(w.oracle.open(path, method=r["method"], headers=headers))
        after, _ = _state(w)
        assert fast == oracle, (r, fast, oracle)  # status, every header, the body's bytes
        assert _diff(before, mid) == _diff(mid, after), r  # database rows
        assert fast_audit == _audit_since(w, seq2), r  # audit entries

    check()
    print("userinfo fast-path cases", served)
    assert served["fast"] >= _examples(w) // 20, served
