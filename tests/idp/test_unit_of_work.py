"""The unit of work: nothing is answered as done unless it is stored, and the audit log keeps what
was decided even when storing fails."""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import event, select

from db.audit import AuditEvent
from tests.idp.conftest import Idp


def _failing_commits(idp: Idp, times: int) -> Any:
    """Fault injection: the next ``times`` commits of the IdP's engine raise (a lost database)."""
    engine = idp.app.extensions["cityid"].engine
    left = {"n": times}

    def fail(conn: Any) -> None:
        if left["n"] > 0:
            left["n"] -= 1
            raise RuntimeError("database went away")

    event.listen(engine, "commit", fail)
    return lambda: event.remove(engine, "commit", fail)


def test_a_token_whose_commit_fails_is_not_handed_out_and_the_audit_log_says_so(idp: Idp) -> None:
    cid, secret = idp.add_client(name="Fahrplan", grant_types=["client_credentials"], scope="read")
    auth = base64.b64encode(f"{cid}:{secret}".encode()).decode()
    http = idp.app.test_client()
    undo = _failing_commits(idp, 1)
    try:
        r = http.post(
            "/token",
            data={"grant_type": "client_credentials", "scope": "read"},
            headers={"Authorization": f"Basic {auth}"},
        )
    finally:
        undo()
    assert r.status_code == 500 and r.get_json() == {"error": "server_error"}
    assert "access_token" not in r.get_data(as_text=True)
    with idp.sessions()() as s:
        issued = s.execute(
            select(AuditEvent.outcome, AuditEvent.reason).where(AuditEvent.action == "token.issue")
        ).all()
    assert [(o, r.startswith("not stored (")) for o, r in issued] == [("failure", True)]
