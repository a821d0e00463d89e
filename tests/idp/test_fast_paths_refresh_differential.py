"""Authlib is the oracle of the refresh-token fast path (idp.oauth.fast_refresh).

Hypothesis generates refresh requests, valid and hostile: wrong, malformed, missing or doubled
client authentication; unknown, disabled and private_key_jwt clients and clients without the
grant; another client's token; replayed tokens (used inside the grace window with the
rotation's answer kept, inside it without one, after it); expired tokens, revoked families, a
disabled citizen; DPoP- and certificate-bound families, DPoP proofs and client certificates;
narrowing, equal, widening, empty, odd and oversized scopes; unknown, repeated and oversized
parameters, query strings and other content types.

Each case builds the same database state twice (the same grant id, the same refresh tokens, the
same kept answer), runs the request once through ``fast_paths = true`` and once through
``fast_paths = false`` (Authlib alone), and compares the status, the answer (all but the random
new refresh token, whose row is compared instead), the access token's header and claims (all
but jti and the times), the rows each run adds, changes and removes (refresh tokens, grants and
every other table; new digests and sealed answers, which are random, by their presence), and the
audit entries.

Cases per database backend: EXAMPLES on SQLite, EXAMPLES_POSTGRESQL on PostgreSQL; the test
insists that the fast path answered a real share of them. Another test proves that a claim lost
to a concurrent rotation changes nothing and ends as the Authlib path ends it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import MetaData, delete, event, insert, update
from werkzeug.test import Client as WsgiClient

import idp.oauth.fast_refresh as fast_refresh
from db import transaction
from idp.app import create_app
from idp.models import Account, Client, Grant, RefreshToken
from idp.oauth import rotation
from tests.idp.conftest import Idp
from tests.idp.dpop_client import DpopKey
from tests.idp.test_fast_paths_differential import (
    AUTH,
    MTLS_HEADER,
    _answer,
    _audit_since,
    _basic,
    _diff,
    _state,
)

EXAMPLES = 100
EXAMPLES_POSTGRESQL = 50  # its commits wait for the disk: about the wall time of SQLite's 100
SCOPE = "openid profile email permits:read"
GRANT_ID = "g" * 32
AUTH_TIME = int(dt.datetime.now(dt.UTC).timestamp()) - 100
TOKEN = "rt-" + "A" * 40  # the presented refresh token (plaintext; the database holds its digest)
SUCCESSOR = "rt-" + "B" * 40  # the rotation's token in a kept answer
OLDER = "rt-" + "C" * 40  # a token rotated before TOKEN, whose answer is still kept


@dataclasses.dataclass
class World:
    idp: Idp
    fast: WsgiClient
    oracle: WsgiClient
    clients: dict[str, tuple[str, str]]  # role -> (client_id, secret)
    metadata: MetaData
    dpop: DpopKey
    anna: str
    bob: str  # disabled
    known: set[str]  # digests the setup writes
    kept_jwt: str


def _setup(idp: Idp) -> World:
    clients: dict[str, tuple[str, str]] = {}
    cb = ["https://rp.example/cb"]

    def add(role: str, **kw: Any) -> None:
        cid, secret = idp.add_client(name=role, redirect_uris=cb, **kw)
        clients[role] = (cid, secret or "")

    add("basic", scope=SCOPE)
    add("post", scope=SCOPE, auth_method="client_secret_post")
    add("public", scope=SCOPE, auth_method="none")
    add("other", scope=SCOPE)
    add("no_rt", scope=SCOPE, grant_types=["authorization_code"])
    add("disabled", scope=SCOPE)
    key = ECKey.generate_key("P-256", private=True)
    add("jwt", scope=SCOPE, auth_method="private_key_jwt", jwks={"keys": [key.as_dict(private=False)]})
    with transaction(idp.sessions()) as s:
        s.execute(update(Client).where(Client.client_id == clients["disabled"][0]).values(disabled=True))
    anna = idp.add_user("anna@example.org")
    bob = idp.add_user("bob@example.org")
    with transaction(idp.sessions()) as s:
        s.execute(update(Account).where(Account.id == bob).values(disabled=True))
    oracle_app = create_app(dataclasses.replace(idp.config, fast_paths=False))
    md = MetaData()
    # the tables a token request can change (every table of idp/ and smartcard/; the audit log
    # is compared entry by entry)
    md.reflect(
        idp.app.extensions["cityid"].engine,
        only=lambda name, _: name.startswith(("idp_", "sc_", "audit_event")),
    )
    known = {idp.keys.token_digest(t) for t in (TOKEN, SUCCESSOR, OLDER)}
    kept = jwt.encode({"alg": "ES256", "typ": "at+jwt"}, {"sub": "kept", "scope": SCOPE}, key)
    return World(
        idp, WsgiClient(idp.app), WsgiClient(oracle_app), clients, md, DpopKey(), anna, bob, known, kept
    )


# ----------------------------------------------------------------------------- the state of a case

NOW_MINUS = {"used_window": 2, "used_window_kept": 2, "used_late": 600, "used_no_answer": 2}


def _build_state(w: World, r: dict[str, Any]) -> None:
    """The database state of case ``r`` (the same for both runs)."""
    kind = r["token"]
    now = dt.datetime.now(dt.UTC)
    owner = (
        "other"
        if kind == "other_client"
        else r["role"]
        if r["role"] in ("basic", "post", "public")
        else "basic"
    )
    keys = w.idp.keys
    with transaction(w.idp.sessions()) as s:
        s.execute(delete(RefreshToken))  # the previous run's (one transaction: one commit)
        s.execute(delete(Grant))
        s.execute(
            insert(Grant).values(
                id=GRANT_ID,
                client_id=w.clients[owner][0],
                account_id=w.bob if kind == "disabled_account" else w.anna,
                scope=SCOPE,
                amr='["pwd"]',
                acr="http://eidas.europa.eu/LoA/low",
                auth_time=AUTH_TIME,
                cnf_jkt=w.dpop.jkt if kind == "dpop_bound" else None,
                cnf_x5t="x" * 43 if kind == "cert_bound" else None,
                revoked_at=now if kind == "revoked" else None,
                revoked_reason="test" if kind == "revoked" else None,
            )
        )
        used = now - dt.timedelta(seconds=NOW_MINUS[kind]) if kind in NOW_MINUS else None
        sealed = None
        if kind in ("used_window_kept", "used_late"):
            answer = rotation.RotationAnswer(
                token={
                    "access_token": w.kept_jwt,
                    "refresh_token": SUCCESSOR,
                    "token_type": "Bearer",
                    "expires_in": 300,
                    "scope": SCOPE,
                },
                issued_at=int(used.timestamp()) if used else 0,
                client_id=w.clients[owner][0],
                jkt=None,
                x5t=None,
                scope_asked=r["scope"] or "",
            )
            sealed = rotation.seal(keys.token_answer, keys.token_digest(TOKEN), answer)
        expires = now - dt.timedelta(seconds=5) if kind == "expired" else now + dt.timedelta(days=30)
        rows = [
            {"token_digest": keys.token_digest(TOKEN), "used_at": used, "answer_sealed": sealed},
            # a token rotated before this one, whose answer is still kept (its successor, TOKEN,
            # is unused): the rotation of TOKEN clears it
            {
                "token_digest": keys.token_digest(OLDER),
                "used_at": now - dt.timedelta(seconds=3),
                "answer_sealed": b"kept-answer-of-the-older-token",
            },
        ]
        if kind in ("used_window_kept", "used_late"):
            rows.append(
                {"token_digest": keys.token_digest(SUCCESSOR), "used_at": None, "answer_sealed": None}
            )
        for row in rows:
            s.execute(
                insert(RefreshToken).values(
                    grant_id=GRANT_ID,
                    scope="openid profile permits:read",
                    expires_at=expires,
                    **row,
                )
            )


def _clear(w: World) -> None:
    with transaction(w.idp.sessions()) as s:
        s.execute(delete(RefreshToken))
        s.execute(delete(Grant))


def _normal_state(w: World) -> tuple[dict[str, list[tuple[Any, ...]]], int]:
    """Every row (idp.oauth.fast_paths' differential test), with the random parts by their
    presence: new refresh token digests, sealed answers, DPoP proof ids."""
    rows, seq = _state(w)
    out: dict[str, list[tuple[Any, ...]]] = {}
    for name, table_rows in rows.items():
        norm = []
        for row in table_rows:
            values = tuple("<bytes>" if isinstance(v, bytes | memoryview) else v for v in row)
            if name == "idp_refresh_token" and values[0] not in w.known:
                values = ("<new>", *values[1:])
            if name == "idp_seen_jti":
                values = ("<jti>", *values[1:])
            norm.append(values)
        out[name] = sorted(norm, key=repr)
    return out, seq


# ----------------------------------------------------------------------------- requests

ROLES = ["basic", "post", "public", "other", "no_rt", "disabled", "jwt", "unknown"]
KINDS = [
    "fresh",
    "other_client",
    "used_window",
    "used_window_kept",
    "used_late",
    "used_no_answer",
    "expired",
    "revoked",
    "disabled_account",
    "dpop_bound",
    "cert_bound",
    "unknown",
    "tampered",
    "empty",
    "huge",
    "missing",
]

FIELDS: dict[str, Any] = {
    "role": st.sampled_from(ROLES),
    "auth": st.sampled_from(AUTH),
    "token": st.sampled_from(KINDS),
    "grant": st.sampled_from(["refresh_token", "client_credentials", "REFRESH_TOKEN", "", None]),
    "scope": st.one_of(
        st.sampled_from(
            [
                None,
                "",
                "openid",
                "permits:read openid",
                "openid profile permits:read",
                "openid email",  # beyond the token's scope (the client's, the grant's): widening
                "admin",
                " openid  ",
            ]
        ),
        st.text(max_size=20),
        st.just("openid " * 400),  # oversized
    ),
    "double": st.sampled_from([None, "grant_type", "refresh_token", "scope", "client_id"]),
    "extra": st.sampled_from(
        [None, ("resource", "https://api.example"), ("foo", "bar"), ("client_assertion_type", "urn:x")]
    ),
    "query": st.sampled_from([None, "scope=openid", "x=1"]),
    "content_type": st.sampled_from(["application/x-www-form-urlencoded", "application/json", None]),
    "dpop": st.sampled_from([None, "valid", "garbage"]),
    "cert": st.sampled_from([None, "garbage"]),
}


@st.composite
def refresh_requests(draw: Any) -> dict[str, Any]:
    """A valid refresh of a proven shape, with 0 to 3 of its fields replaced by anything."""
    role = draw(st.sampled_from(["basic", "post", "public"]))
    r: dict[str, Any] = {
        "role": role,
        "auth": {"public": "id_only"}.get(role, role),
        "token": "fresh",
        "grant": "refresh_token",
        "scope": draw(
            st.sampled_from([None, "openid", "openid permits:read", "openid profile permits:read"])
        ),
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


def _request(w: World, r: dict[str, Any]) -> dict[str, Any]:
    cid, secret = w.clients.get(r["role"], ("no-such-client", "no-such-secret"))
    token = {
        "unknown": "rt-" + "Z" * 40,
        "tampered": TOKEN[:-1] + "B",
        "empty": "",
        "huge": TOKEN + "A" * 300,
        "missing": None,
    }.get(r["token"], TOKEN)
    form: list[tuple[str, str]] = []
    if r["grant"] is not None:
        form.append(("grant_type", r["grant"]))
    if token is not None:
        form.append(("refresh_token", token))
    if r["scope"] is not None:
        form.append(("scope", r["scope"]))
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
        headers["Authorization"] = "Bearer abc"
    if auth == "id_only":
        form.append(("client_id", cid))
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
    return {"path": path, "data": body, "headers": headers}


def _refresh_answer(resp: Any) -> dict[str, Any]:
    out = _answer(resp)
    body = out["body"]
    if isinstance(body, dict) and body.get("refresh_token") not in (None, SUCCESSOR):
        out["body"] = {**body, "refresh_token": "<new>"}  # its row is compared
    elif isinstance(body, dict) and body.get("refresh_token") == SUCCESSOR:
        # the kept answer again (idp.oauth.rotation.again): expires_in counts from the rotation,
        # a second apart between the two runs
        out["body"] = {**body, "expires_in": 0 < body["expires_in"] <= 300}
    return out


def _run(w: World, client: WsgiClient, r: dict[str, Any]) -> tuple[Any, Any, Any]:
    _build_state(w, r)
    before, seq = _normal_state(w)
    resp = client.post(**_request(w, r))  # a DPoP proof is built per run (its jti is single-use)
    answer = _refresh_answer(resp)
    after, _ = _normal_state(w)
    return answer, _diff(before, after), _audit_since(w, seq)


def _counting(monkeypatch: Any) -> dict[str, int]:
    served = {"fast": 0, "all": 0}
    real = fast_refresh.refresh

    def counting(*args: Any) -> Any:
        resp = real(*args)
        served["fast"] += resp is not None
        return resp

    monkeypatch.setattr(fast_refresh, "refresh", counting)
    return served


def test_refresh_fast_path_answers_exactly_as_authlib(
    idp_factory: Any, monkeypatch: Any, db_url: str
) -> None:
    examples = EXAMPLES if db_url.startswith("sqlite") else EXAMPLES_POSTGRESQL
    w = _setup(idp_factory(mtls_client_cert_header=MTLS_HEADER))
    served = _counting(monkeypatch)

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(r=refresh_requests())
    def check(r: dict[str, Any]) -> None:
        served["all"] += 1
        fast = _run(w, w.fast, r)
        oracle = _run(w, w.oracle, r)
        assert fast[0] == oracle[0], (r, fast[0], oracle[0])  # status, headers, body, token
        assert fast[1] == oracle[1], (r, fast[1], oracle[1])  # database rows
        assert fast[2] == oracle[2], (r, fast[2], oracle[2])  # audit entries

    check()
    print("refresh fast-path cases", served)
    assert served["fast"] >= examples // 5, served


def test_refresh_fast_path_serves_the_plain_shapes_and_the_setting_turns_it_off(
    idp_factory: Any, monkeypatch: Any
) -> None:
    """basic, post and a public client's unbound token really take the fast path; with
    ``fast_paths = false`` Authlib alone answers."""
    w = _setup(idp_factory())
    served = _counting(monkeypatch)
    base = {
        "token": "fresh",
        "grant": "refresh_token",
        "scope": None,
        "double": None,
        "extra": None,
        "query": None,
        "content_type": "application/x-www-form-urlencoded",
        "dpop": None,
        "cert": None,
    }
    for role, auth in (("basic", "basic"), ("post", "post"), ("public", "id_only")):
        r = {**base, "role": role, "auth": auth}
        answer, _, audit = _run(w, w.fast, r)
        assert answer["status"] == 200, answer
        assert [a[1] for a in audit] == ["token.issue"]
    assert served == {"fast": 3, "all": 0}
    answer, _, _ = _run(w, w.oracle, {**base, "role": "basic", "auth": "basic"})
    assert answer["status"] == 200 and served["fast"] == 3  # fast_paths = false: Authlib alone


@pytest.mark.postgresql_only
def test_a_refresh_claim_lost_to_a_concurrent_rotation_ends_as_in_the_authlib_path_rfc9700_4_14_2(
    idp_factory: Any, db_url: str
) -> None:
    """Between the fast path's read and its claim, another request rotates the token and commits.
    The fast path's claim (UPDATE ... WHERE used_at IS NULL) finds it used: it stores nothing and
    hands over to Authlib, which answers from the winner's committed state: within the grace
    window, the winner's tokens again; the grant lives, the token has exactly one successor.

    PostgreSQL only: on SQLite the read already holds the write lock (BEGIN IMMEDIATE), so no
    other request can rotate the token between the read and the claim."""
    w = _setup(idp_factory())
    r = {
        "role": "basic",
        "auth": "basic",
        "token": "fresh",
        "grant": "refresh_token",
        "scope": None,
        "double": None,
        "extra": None,
        "query": None,
        "content_type": "application/x-www-form-urlencoded",
        "dpop": None,
        "cert": None,
    }
    _build_state(w, r)
    engine = w.idp.app.extensions["cityid"].engine
    winner: dict[str, Any] = {}
    fired = threading.Event()

    def rival_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # the fast path is about to claim: a rival request (the Authlib path, through the same
        # app) rotates the token first and commits
        if fired.is_set() or not statement.lstrip().upper().startswith("UPDATE IDP_REFRESH_TOKEN"):
            return
        if "answer_sealed=%(sealed)s" not in statement:  # idp.oauth.fast_refresh's claim
            return
        fired.set()
        t = threading.Thread(target=lambda: winner.update(resp=w.oracle.post(**_request(w, r))))
        t.start()
        t.join(timeout=30)

    event.listen(engine, "before_cursor_execute", rival_first)
    try:
        loser = w.fast.post(**_request(w, r))
    finally:
        event.remove(engine, "before_cursor_execute", rival_first)
    assert fired.is_set()
    first = winner["resp"]
    assert first.status_code == 200, first.get_data()
    assert loser.status_code == 200, loser.get_data()
    # RFC 9700 §4.14.2 with the grace window: the loser gets the winner's tokens again
    assert loser.get_json()["refresh_token"] == first.get_json()["refresh_token"]
    assert loser.get_json()["access_token"] == first.get_json()["access_token"]
    state, _ = _normal_state(w)
    tokens = state["idp_refresh_token"]
    assert len([t for t in tokens if t[0] == "<new>"]) == 1  # exactly one successor
    assert all(g[-1] is None for g in state["idp_grant"])  # not revoked
    _clear(w)


def test_refresh_fast_path_without_a_grace_window_keeps_no_answer_as_authlib(
    idp_factory: Any, monkeypatch: Any
) -> None:
    """``refresh_token_grace_seconds = 0``: neither path keeps the rotation's answer (RFC 9700
    §4.14.2: every reuse is a replay), for a confidential and for a public client alike."""
    w = _setup(idp_factory(refresh_token_grace_seconds=0))
    served = _counting(monkeypatch)
    for role, auth in (("basic", "basic"), ("public", "id_only")):
        r = {
            "role": role,
            "auth": auth,
            "token": "fresh",
            "grant": "refresh_token",
            "scope": "openid",
            "double": None,
            "extra": None,
            "query": None,
            "content_type": "application/x-www-form-urlencoded",
            "dpop": None,
            "cert": None,
        }
        fast, oracle = _run(w, w.fast, r), _run(w, w.oracle, r)
        assert fast == oracle, (r, fast, oracle)
        changed = fast[1]["idp_refresh_token"][0]
        rotated = next(row for row in changed if row[0] == w.idp.keys.token_digest(TOKEN))
        assert rotated[-1] is None  # the used token keeps no sealed answer
    assert served["fast"] == 2
