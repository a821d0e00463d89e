"""Issue 19 (2): audit records of a refused request are not lost while the database is down."""

from __future__ import annotations

import shutil

import requests
from sqlalchemy import select

from db.audit import AuditEvent, verify
from idp import audit_spool
from tests.idp.conftest import Idp
from tests.idp.test_unit_of_work import _failing_commits


def test_refusal_records_wait_in_the_spool_while_the_database_is_down_and_are_written_once(
    idp: Idp,
) -> None:
    cid, _secret = idp.add_client(name="Fahrplan", grant_types=["client_credentials"], scope="read")
    undo = _failing_commits(idp, 1)  # the refusal's own audit transaction cannot commit
    try:
        r = requests.post(
            f"{idp.url}/token", data={"grant_type": "client_credentials"}, auth=(cid, "wrong"), timeout=10
        )
    finally:
        undo()
    assert r.status_code == 500
    spooled = sorted(audit_spool.spool_dir(idp.config.data_dir).glob("*.json"))
    assert len(spooled) == 1
    kept = spooled[0].with_name("copy.keep")
    shutil.copy(spooled[0], kept)

    assert audit_spool.replay(idp.sessions(), idp.config.data_dir) == 1
    shutil.copy(kept, spooled[0])  # a crash between the commit and the file's removal
    assert audit_spool.replay(idp.sessions(), idp.config.data_dir) == 0

    with idp.sessions()() as s:
        rows = s.execute(
            select(AuditEvent.outcome, AuditEvent.details).where(AuditEvent.action == "token.refuse")
        ).all()
        assert verify(s).ok
    assert len(rows) == 1
    outcome, details = rows[0]
    assert outcome == "denied" and '"written_late": true' in details and cid in details
    assert not list(audit_spool.spool_dir(idp.config.data_dir).glob("*.json"))
