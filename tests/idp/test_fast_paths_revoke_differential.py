"""Authlib is the oracle of the revocation fast path (idp.oauth.fast_revoke, RFC 7009).

Hypothesis generates revocation requests, valid and hostile: wrong, malformed, missing or
doubled client authentication; unknown, disabled, public and private_key_jwt clients; the
client's own access and refresh tokens, another client's, an already revoked access token,
used, expired and revoked-family refresh tokens, unknown, tampered, empty, oversized and missing
tokens; right, wrong, unknown and empty hints; unknown and repeated parameters, query strings and
other content types.

Each case builds the same database state twice (the same token family, the same revoked access
token ids), runs the request through ``fast_paths = true`` and through ``fast_paths = false``
(the Flask view, Authlib's RevocationEndpoint), and compares the status, every header but the
date, the body's bytes, the rows each run adds, changes and removes (grants, refresh tokens,
revoked access tokens: every table of idp/ and smartcard/) and the audit entries.

Cases per database backend: EXAMPLES on SQLite, EXAMPLES_POSTGRESQL on PostgreSQL; the test
insists that the fast path answered a real share of them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, delete, insert

import idp.oauth.fast_revoke as fast_revoke
from db import transaction
from idp.models import Grant, RefreshToken, RevokedAccessToken
from tests.idp.test_fast_paths_differential import (
    AUTH,
    ROLES,
    World,
    _audit_since,
    _basic,
    _diff,
    _full_answer,
    _issue,
    _setup,
    _state,
)

EXAMPLES = 100
EXAMPLES_POSTGRESQL = 70  # its commits wait for the disk: about the wall time of SQLite's 100
GRANT_ID = "f" * 32
REFRESH = "rt-" + "R" * 40  # the family's refresh token (plaintext)


@dataclasses.dataclass
class Case:
    w: World
    tokens: dict[str, str]  # kind -> access token
    revoked_jti: str
    anna: str


def _jti(token: str) -> str:
    from joserfc import jws

    return str(json.loads(jws.extract_compact(token.encode()).payload)["jti"])


def _build_state(c: Case, r: dict[str, Any]) -> None:
    kind = r["token"]
    now = dt.datetime.now(dt.UTC)
    owner = "post" if kind == "other_refresh" else r["role"] if r["role"] in ("basic", "post") else "basic"
    with transaction(c.w.idp.sessions()) as s:
        s.execute(delete(RefreshToken))  # the previous run's (one transaction: one commit)
        s.execute(delete(Grant))
        s.execute(delete(RevokedAccessToken))
        s.execute(
            insert(RevokedAccessToken).values(jti=c.revoked_jti, expires_at=now + dt.timedelta(hours=1))
        )
        s.execute(
            insert(Grant).values(
                id=GRANT_ID,
                client_id=c.w.clients[owner][0],
                account_id=c.anna,
                scope="openid",
                amr='["pwd"]',
                revoked_at=now if kind == "revoked_refresh" else None,
                revoked_reason="test" if kind == "revoked_refresh" else None,
            )
        )
        s.execute(
            insert(RefreshToken).values(
                token_digest=c.w.idp.keys.token_digest(REFRESH),
                grant_id=GRANT_ID,
                scope="openid",
                expires_at=now
                + (dt.timedelta(seconds=-5) if kind == "expired_refresh" else dt.timedelta(days=1)),
                used_at=now if kind == "used_refresh" else None,
                answer_sealed=b"kept" if kind == "used_refresh" else None,
            )
        )


def _clear(c: Case) -> None:
    with transaction(c.w.idp.sessions()) as s:
        s.execute(delete(RefreshToken))
        s.execute(delete(Grant))


def _normal_state(w: World) -> tuple[dict[str, list[tuple[Any, ...]]], int]:
    rows, seq = _state(w)
    return {
        k: [tuple("<bytes>" if isinstance(v, bytes | memoryview) else v for v in r) for r in rs]
        for k, rs in rows.items()
    }, seq


KINDS = [
    "own_access",
    "own_refresh",
    "other_access",
    "other_refresh",
    "revoked_access",
    "used_refresh",
    "expired_refresh",
    "revoked_refresh",
    "garbage",
    "tampered",
    "empty",
    "huge",
    "missing",
]
FIELDS: dict[str, Any] = {
    "role": st.sampled_from(ROLES),
    "auth": st.sampled_from(AUTH),
    "token": st.sampled_from(KINDS),
    "hint": st.sampled_from([None, "access_token", "refresh_token", "foo", ""]),
    "double": st.sampled_from([None, "token", "token_type_hint", "client_id"]),
    "extra": st.sampled_from([None, ("foo", "bar"), ("client_assertion", "x.y.z")]),
    "query": st.sampled_from([None, "token=x"]),
    "content_type": st.sampled_from(["application/x-www-form-urlencoded", "application/json", None]),
}


@st.composite
def revoke_requests(draw: Any) -> dict[str, Any]:
    """A valid revocation of the client's own token, with 0 to 3 fields replaced by anything."""
    role = draw(st.sampled_from(["basic", "post"]))
    r: dict[str, Any] = {
        "role": role,
        "auth": role,
        "token": draw(st.sampled_from(["own_access", "own_refresh"])),
        "hint": draw(st.sampled_from([None, "access_token", "refresh_token"])),
        "double": None,
        "extra": None,
        "query": None,
        "content_type": "application/x-www-form-urlencoded",
    }
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True)):
        r[name] = draw(FIELDS[name])
    return r


def _request(c: Case, r: dict[str, Any]) -> dict[str, Any]:
    w = c.w
    cid, secret = w.clients.get(r["role"], ("no-such-client", "no-such-secret"))
    own = c.tokens["post"] if r["role"] == "post" else c.tokens["basic"]
    value = {
        "own_access": own,
        "other_access": c.tokens["basic"] if r["role"] == "post" else c.tokens["post"],
        "revoked_access": c.tokens["revoked"],
        "garbage": "not-a-token",
        "tampered": own[:-4] + ("AAAA" if not own.endswith("AAAA") else "BBBB"),
        "empty": "",
        "huge": "a" * 3000,
        "missing": None,
    }.get(r["token"], REFRESH)
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
        headers["Authorization"] = "Basic ///+"
    if auth == "basic_noscheme":
        headers["Authorization"] = cid
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
    path = "/revoke" + (f"?{r['query']}" if r["query"] else "")
    return {"path": path, "data": body, "headers": headers}


def _run(c: Case, client: Any, r: dict[str, Any]) -> tuple[Any, Any, Any]:
    _build_state(c, r)
    before, seq = _normal_state(c.w)
    answer = _full_answer(client.post(**_request(c, r)))
    after, _ = _normal_state(c.w)
    return answer, _diff(before, after), _audit_since(c.w, seq)


def _case(idp: Any) -> Case:
    w = _setup(idp)
    md = MetaData()  # the tables a request can change; the audit log entry by entry
    md.reflect(
        w.idp.app.extensions["cityid"].engine, only=lambda n, _: n.startswith(("idp_", "sc_", "audit_event"))
    )
    w = dataclasses.replace(w, metadata=md)
    anna = idp.add_user("anna@example.org")
    tokens = {"basic": _issue(w, "basic"), "post": _issue(w, "post"), "revoked": _issue(w, "basic")}
    return Case(w, tokens, _jti(tokens["revoked"]), anna)


def _counting(monkeypatch: Any) -> dict[str, int]:
    served = {"fast": 0, "all": 0}
    real = fast_revoke.revocation

    def counting(*args: Any) -> Any:
        resp = real(*args)
        served["fast"] += resp is not None
        return resp

    monkeypatch.setattr(fast_revoke, "revocation", counting)
    return served


def test_revocation_fast_path_answers_exactly_as_authlib(
    idp_factory: Any, monkeypatch: Any, db_url: str
) -> None:
    examples = EXAMPLES if db_url.startswith("sqlite") else EXAMPLES_POSTGRESQL
    c = _case(idp_factory())
    served = _counting(monkeypatch)

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(r=revoke_requests())
    def check(r: dict[str, Any]) -> None:
        served["all"] += 1
        fast = _run(c, c.w.fast, r)
        oracle = _run(c, c.w.oracle, r)
        assert fast[0] == oracle[0], (r, fast[0], oracle[0])  # status, every header, the body's bytes
        assert fast[1] == oracle[1], (r, fast[1], oracle[1])  # database rows
        assert fast[2] == oracle[2], (r, fast[2], oracle[2])  # audit entries

    check()
    print("revocation fast-path cases", served)
    assert served["fast"] >= examples // 5, served


def test_revocation_fast_path_revokes_access_tokens_and_families_rfc7009_2_1(
    idp_factory: Any, monkeypatch: Any
) -> None:
    """The plain shapes take the fast path, and what they revoke ends: the access token (inactive
    at introspection), the refresh token's whole family (its grant revoked)."""
    c = _case(idp_factory())
    served = _counting(monkeypatch)
    cid, secret = c.w.clients["basic"]
    auth = {"Authorization": _basic(cid, secret)}
    introspect = c.w.fast.post("/introspect", data={"token": c.tokens["basic"]}, headers=auth)
    assert introspect.get_json()["active"] is True
    assert c.w.fast.post("/revoke", data={"token": c.tokens["basic"]}, headers=auth).status_code == 200
    introspect = c.w.fast.post("/introspect", data={"token": c.tokens["basic"]}, headers=auth)
    assert introspect.get_json() == {"active": False}
    _build_state(c, {"token": "own_refresh", "role": "basic"})
    revoked = c.w.fast.post(
        "/revoke", data={"token": REFRESH, "token_type_hint": "refresh_token"}, headers=auth
    )
    assert revoked.status_code == 200
    assert served == {"fast": 2, "all": 0}
    with transaction(c.w.idp.sessions()) as s:
        grant = s.get(Grant, GRANT_ID)
        assert grant is not None and grant.revoked_at is not None
    _clear(c)
