"""Issue 19 (3, 4): an audit entry describes what was committed, and a refusal after client
authentication names the client."""

from __future__ import annotations

import base64
from typing import Any

import requests
from sqlalchemy import event, select

from db.audit import AuditEvent
from tests.idp.conftest import Idp
from tests.idp.test_code_flow import _tokens


def _entries(idp: Idp, action: str) -> list[Any]:
    with idp.sessions()() as s:
        return list(
            s.execute(
                select(AuditEvent.outcome, AuditEvent.actor, AuditEvent.reason, AuditEvent.details)
                .where(AuditEvent.action == action)
                .order_by(AuditEvent.seq)
            ).all()
        )


def test_a_refresh_that_loses_its_race_is_not_audited_as_an_issued_token(idp: Idp) -> None:
    cid, secret = idp.add_client(name="Svc", redirect_uris=["http://127.0.0.1:9/cb"])
    idp.add_user("anna@example.org")
    tok = _tokens(idp, cid, secret, "anna@example.org", "openid email")
    issued_before = len(_entries(idp, "token.issue"))
    engine = idp.app.extensions["cityid"].engine
    raced = {"done": False}

    def concurrent_winner(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # Just before this request marks its refresh token used, another request has done so: on
        # the same connection, so that it holds on every backend (and rolls back with the loser).
        if not raced["done"] and statement.lstrip().upper().startswith("UPDATE IDP_REFRESH_TOKEN"):
            raced["done"] = True
            cursor.execute("UPDATE idp_refresh_token SET used_at = CURRENT_TIMESTAMP")

    event.listen(engine, "before_cursor_execute", concurrent_winner)
    try:
        r = requests.post(
            f"{idp.url}/token",
            auth=(cid, secret or ""),
            data={"grant_type": "refresh_token", "refresh_token": tok["refresh_token"]},
            timeout=10,
        )
    finally:
        event.remove(engine, "before_cursor_execute", concurrent_winner)
    assert raced["done"]
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    issued = _entries(idp, "token.issue")[issued_before:]
    # the loser issued nothing that was committed: no token.issue success names it
    assert [o for o, _a, _r, _d in issued if o == "success"] == []


def test_a_success_queued_by_a_request_that_rolls_back_is_written_as_a_failure(idp: Idp) -> None:
    from idp import uow

    with idp.app.test_request_context("/"):
        uow.record(action="test.change", outcome="success", actor="admin", subject="x", reason="did it")
        uow.record(action="test.refuse", outcome="denied", actor="admin", subject="x", reason="no")
        uow.finish(False)  # the request failed after it had queued its success
    got = [(o, r) for o, _a, r, _d in _entries(idp, "test.change") + _entries(idp, "test.refuse")]
    assert got == [("failure", "rolled back: did it"), ("denied", "no")]


def test_a_refusal_after_client_authentication_names_the_client(idp: Idp) -> None:
    cid, secret = idp.add_client(name="Fahrplan", grant_types=["client_credentials"], scope="read")
    auth = base64.b64encode(f"{cid}:{secret}".encode()).decode()
    r = requests.post(
        f"{idp.url}/token",
        data={"grant_type": "authorization_code", "code": "no-such-code", "redirect_uri": "https://x/cb"},
        headers={"Authorization": f"Basic {auth}"},
        timeout=10,
    )
    assert r.status_code >= 400
    # a wrong secret: not authenticated, so not the actor; what it claimed is in the details
    r2 = requests.post(
        f"{idp.url}/token",
        data={"grant_type": "client_credentials"},
        auth=(cid, "wrong"),
        timeout=10,
    )
    assert r2.status_code == 401
    refusals = _entries(idp, "token.refuse")
    assert [(actor, f'"claimed_client_id": "{cid}"' in details) for _o, actor, _r, details in refusals] == [
        (cid, True),
        ("anonymous", True),
    ]
