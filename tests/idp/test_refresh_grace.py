"""Refresh token rotation with a grace window for retries (RFC 9700 §4.14.2, idp.oauth.rotation):
the same client's retry within the window gets the rotation's tokens again; anything else is a
replay that revokes the grant."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
import requests
from sqlalchemy import select, update

from db import transaction
from db.audit import AuditEvent
from idp.config import serve_problem
from idp.models import Grant, RefreshToken
from tests.idp.conftest import Idp, pkce_pair
from tests.idp.dpop_client import DpopKey
from tests.idp.test_code_flow import _tokens, tokens_alive
from tests.idp.test_dpop import REDIRECT, _code, _nonce_dance, _token

EMAIL = "anna@example.org"


def _client(idp: Idp) -> tuple[str, str]:
    cid, secret = idp.add_client(name="Stadt-App", redirect_uris=["http://127.0.0.1:9/cb"])
    assert secret is not None
    idp.add_user(EMAIL)
    return cid, secret


def _refresh(idp: Idp, cid: str, secret: str, rt: str, **extra: str) -> requests.Response:
    return requests.post(
        f"{idp.url}/token",
        auth=(cid, secret),
        data={"grant_type": "refresh_token", "refresh_token": rt, **extra},
        timeout=10,
    )


def _revoked_reason(idp: Idp) -> str | None:
    with transaction(idp.sessions()) as s:
        reasons = s.scalars(select(Grant.revoked_reason)).all()
    assert len(reasons) == 1
    return reasons[0]


def _age_rotation(idp: Idp, seconds: int) -> None:
    """Move every rotation ``seconds`` into the past (instead of sleeping through the window)."""
    with transaction(idp.sessions()) as s:
        s.execute(
            update(RefreshToken)
            .where(RefreshToken.used_at.is_not(None))
            .values(used_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds))
        )


def test_a_retried_refresh_within_the_grace_window_gets_the_same_tokens_and_keeps_the_grant(
    idp: Idp,
) -> None:
    cid, secret = _client(idp)
    tok = _tokens(idp, cid, secret, EMAIL, "openid email")
    first = _refresh(idp, cid, secret, tok["refresh_token"])
    assert first.status_code == 200, first.text
    retry = _refresh(idp, cid, secret, tok["refresh_token"])  # the app never saw `first`
    assert retry.status_code == 200, retry.text
    won, again = first.json(), retry.json()
    assert again["refresh_token"] == won["refresh_token"] and again["access_token"] == won["access_token"]
    assert again["scope"] == won["scope"] and again["token_type"] == won["token_type"]
    assert 0 <= won["expires_in"] - again["expires_in"] <= 2  # counts from the rotation
    assert retry.headers["Cache-Control"] == "no-store"
    assert _revoked_reason(idp) is None
    # the family lives on: the tokens handed out twice work, and rotation goes on from them
    assert tokens_alive(idp, cid, secret, again) == (200, 200)
    with transaction(idp.sessions()) as s:
        actions = s.scalars(select(AuditEvent.action).where(AuditEvent.action == "token.issue_again")).all()
    assert actions == ["token.issue_again"]


def test_a_replay_after_the_grace_window_revokes_the_grant_rfc9700_4_14_2(idp: Idp) -> None:
    cid, secret = _client(idp)
    tok = _tokens(idp, cid, secret, EMAIL, "openid email")
    won = _refresh(idp, cid, secret, tok["refresh_token"]).json()
    _age_rotation(idp, 11)  # the default window is 10 s
    replay = _refresh(idp, cid, secret, tok["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert _revoked_reason(idp) == "refresh token replayed after the grace window"
    assert tokens_alive(idp, cid, secret, won) == (401, 400)  # the winner's tokens die too


def test_a_replay_by_another_client_within_the_grace_window_revokes_the_grant(idp: Idp) -> None:
    cid, secret = _client(idp)
    other, other_secret = idp.add_client(name="Andere", redirect_uris=["http://127.0.0.1:9/cb"])
    assert other_secret is not None
    tok = _tokens(idp, cid, secret, EMAIL, "openid email")
    won = _refresh(idp, cid, secret, tok["refresh_token"]).json()
    replay = _refresh(idp, other, other_secret, tok["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert _revoked_reason(idp) == "refresh token replayed by another client"
    assert tokens_alive(idp, cid, secret, won) == (401, 400)


def test_a_retry_asking_another_scope_is_a_replay(idp: Idp) -> None:
    cid, secret = _client(idp)
    tok = _tokens(idp, cid, secret, EMAIL, "openid email")
    assert _refresh(idp, cid, secret, tok["refresh_token"]).status_code == 200
    replay = _refresh(idp, cid, secret, tok["refresh_token"], scope="openid")
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert _revoked_reason(idp) == "refresh token replayed asking another scope"


def test_a_retry_after_the_successor_was_used_is_a_replay(idp: Idp) -> None:
    cid, secret = _client(idp)
    tok = _tokens(idp, cid, secret, EMAIL, "openid email")
    won = _refresh(idp, cid, secret, tok["refresh_token"]).json()
    assert _refresh(idp, cid, secret, won["refresh_token"]).status_code == 200  # the app did get it
    replay = _refresh(idp, cid, secret, tok["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert _revoked_reason(idp) == "refresh token replayed after its successor was used"


def test_with_the_grace_window_off_a_replay_revokes_the_grant_at_once(idp_factory: Any) -> None:
    idp = idp_factory(refresh_token_grace_seconds=0)
    cid, secret = _client(idp)
    tok = _tokens(idp, cid, secret, EMAIL, "openid email")
    won = _refresh(idp, cid, secret, tok["refresh_token"]).json()
    replay = _refresh(idp, cid, secret, tok["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert _revoked_reason(idp) == "refresh token replayed (no grace window)"
    assert tokens_alive(idp, cid, secret, won) == (401, 400)
    with transaction(idp.sessions()) as s:
        assert (
            s.scalars(select(RefreshToken.answer_sealed).where(RefreshToken.answer_sealed.is_not(None))).all()
            == []
        )


def test_the_kept_answer_is_sealed_and_bound_to_its_token(idp: Idp) -> None:
    from idp.oauth import rotation

    cid, secret = _client(idp)
    tok = _tokens(idp, cid, secret, EMAIL, "openid email")
    won = _refresh(idp, cid, secret, tok["refresh_token"]).json()
    with transaction(idp.sessions()) as s:
        rows = s.scalars(select(RefreshToken).where(RefreshToken.answer_sealed.is_not(None))).all()
        assert len(rows) == 1
        row = rows[0]
        sealed, digest = row.answer_sealed, row.token_digest
        other_digest = s.scalars(
            select(RefreshToken.token_digest).where(RefreshToken.token_digest != digest)
        ).first()
    assert sealed is not None and other_digest is not None
    # neither token in the clear (refresh tokens are stored as keyed digests only)
    assert won["refresh_token"].encode() not in sealed and won["access_token"].encode() not in sealed
    assert rotation.unseal(idp.keys.token_answer, digest, sealed) is not None
    # copied onto another token's row it does not open (the token's digest is the associated data)
    assert rotation.unseal(idp.keys.token_answer, other_digest, sealed) is None


def test_a_kept_answer_is_purged_once_past_any_grace_window(idp: Idp) -> None:
    from db import utcnow
    from idp.serve import purge_expired

    cid, secret = _client(idp)
    tok = _tokens(idp, cid, secret, EMAIL, "openid email")
    assert _refresh(idp, cid, secret, tok["refresh_token"]).status_code == 200

    def kept() -> int:
        with transaction(idp.sessions()) as s:
            return len(s.scalars(select(RefreshToken).where(RefreshToken.answer_sealed.is_not(None))).all())

    with transaction(idp.sessions()) as s:
        purge_expired(s, utcnow())
    assert kept() == 1  # still within the window
    _age_rotation(idp, 301)
    with transaction(idp.sessions()) as s:
        purge_expired(s, utcnow())
    assert kept() == 0


@pytest.fixture
def dpop_bound(idp: Idp) -> tuple[Idp, str, DpopKey, dict[str, Any]]:
    cid, _ = idp.add_client(name="City app", redirect_uris=[REDIRECT], auth_method="none")
    idp.add_user("dpop@example.org")
    verifier, challenge = pkce_pair()
    code = _code(idp, cid, challenge)
    key = DpopKey()
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": cid,
        "code_verifier": verifier,
    }
    r = _nonce_dance(idp, key, data)
    assert r.status_code == 200, r.text
    return idp, cid, key, r.json()


def test_a_retry_with_the_same_dpop_key_gets_the_same_bound_tokens_rfc9449_5(dpop_bound: Any) -> None:
    idp, cid, key, tok = dpop_bound
    data = {"grant_type": "refresh_token", "refresh_token": tok["refresh_token"], "client_id": cid}
    first = _token(idp, key, data)
    key.nonce = first.headers.get("DPoP-Nonce", key.nonce)
    retry = _token(idp, key, data)
    assert first.status_code == 200 and retry.status_code == 200, retry.text
    assert retry.json()["access_token"] == first.json()["access_token"]
    assert retry.json()["refresh_token"] == first.json()["refresh_token"]
    assert retry.json()["token_type"] == "DPoP"
    assert _revoked_reason(idp) is None


def test_a_replay_with_another_dpop_key_within_the_grace_window_revokes_the_grant_rfc9449_5(
    dpop_bound: Any,
) -> None:
    idp, cid, key, tok = dpop_bound
    data = {"grant_type": "refresh_token", "refresh_token": tok["refresh_token"], "client_id": cid}
    first = _token(idp, key, data)
    assert first.status_code == 200, first.text
    thief = DpopKey()
    thief.nonce = first.headers.get("DPoP-Nonce", key.nonce)
    replay = _token(idp, thief, data)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert _revoked_reason(idp) == "refresh token replayed with another DPoP key"
    key.nonce = replay.headers.get("DPoP-Nonce", thief.nonce)
    won = {"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"], "client_id": cid}
    assert _token(idp, key, won).json()["error"] == "invalid_grant"


def test_concurrent_refreshes_with_one_token_both_get_the_same_tokens(idp: Idp) -> None:
    """Two requests with one refresh token at once (on PostgreSQL the second UPDATE waits for the
    first's commit; SQLite runs them one after the other): both 200 with the same tokens, several
    rounds, and the grant lives on."""
    cid, secret = _client(idp)
    tok = _tokens(idp, cid, secret, EMAIL, "openid email")
    rt = tok["refresh_token"]
    for _round in range(6):
        start = threading.Barrier(2)
        answers: list[requests.Response] = []

        def refresh(token: str = rt, barrier: threading.Barrier = start) -> None:
            barrier.wait()
            answers.append(_refresh(idp, cid, secret, token))

        threads = [threading.Thread(target=refresh) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        one, two = (a.json() for a in answers)
        assert one["refresh_token"] == two["refresh_token"] and one["access_token"] == two["access_token"]
        rt = one["refresh_token"]
    assert _revoked_reason(idp) is None
    assert tokens_alive(idp, cid, secret, {"access_token": one["access_token"], "refresh_token": rt}) == (
        200,
        200,
    )


@pytest.mark.parametrize("seconds, ok", [(0, True), (10, True), (300, True), (-1, False), (301, False)])
def test_the_grace_window_setting_is_checked_at_start(seconds: int, ok: bool, tmp_path: Any) -> None:
    from idp.config import BrandingConfig
    from tests.idp.conftest import make_config

    cfg = make_config(
        tmp_path,
        "",
        "https://id.example.org",
        refresh_token_grace_seconds=seconds,
        branding=BrandingConfig(accessibility_contact="barrierefreiheit@example.org"),
    )
    problem = serve_problem(cfg)
    assert (problem is None) == ok, problem
    if not ok:
        assert problem is not None and "refresh_token_grace_seconds" in problem


def test_a_public_clients_unbound_refresh_replay_within_the_grace_window_revokes_the_grant(
    idp: Idp,
) -> None:
    """Review finding: for a public client without DPoP or certificate the client_id proves
    nothing, so a replay within the window is theft as ever (RFC 9700 §4.14.2)."""
    cid, _none = idp.add_client(name="City app", redirect_uris=["http://127.0.0.1:9/cb"], auth_method="none")
    idp.add_user(EMAIL)
    tok = _tokens(idp, cid, None, EMAIL, "openid email")
    data = {"grant_type": "refresh_token", "refresh_token": tok["refresh_token"], "client_id": cid}
    won = requests.post(f"{idp.url}/token", data=data, timeout=10)
    assert won.status_code == 200, won.text
    assert won.json()["token_type"] == "Bearer"  # not sender-constrained
    replay = requests.post(f"{idp.url}/token", data=data, timeout=10)  # within the window
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert (
        _revoked_reason(idp) == "refresh token replayed by a public client without sender-constrained tokens"
    )
    with transaction(idp.sessions()) as s:
        assert (
            s.scalars(select(RefreshToken.answer_sealed).where(RefreshToken.answer_sealed.is_not(None))).all()
            == []
        )
    nxt = {**data, "refresh_token": won.json()["refresh_token"]}
    assert requests.post(f"{idp.url}/token", data=nxt, timeout=10).json()["error"] == "invalid_grant"
