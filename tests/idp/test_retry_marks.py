"""Issue 19 (5): a request is repeated after a lost connection only when it never sent a COMMIT;
the mark costs nothing per statement (issue 14: no SQLAlchemy execution events on the hot path)."""

from __future__ import annotations

from flask import g
from sqlalchemy import select, text

from idp import retry
from tests.idp.conftest import Idp


def test_a_commit_sent_marks_the_request_and_reads_alone_do_not(idp: Idp) -> None:
    with idp.app.app_context():
        s = idp.sessions()()
        s.execute(text("SELECT 1")).all()
        s.rollback()
        assert not g.get("_db_commit_attempted", False)  # nothing was ever about to be stored
        s.execute(select(text("1"))).all()
        s.commit()
        assert g.get("_db_commit_attempted", False)  # a COMMIT went out: never repeated
        s.close()


def test_the_engine_dispatches_no_execution_events_issue_14(idp: Idp) -> None:
    """A connection event (e.g. ``commit``) makes SQLAlchemy dispatch its execution events around
    every statement of every request; the commit mark is the dialect's own COMMIT instead."""
    engine = idp.app.extensions["cityid"].engine
    assert not engine._has_events
    retry.track_commits(idp.sessions())  # a second app on the same engine: marked once
    with idp.app.app_context():
        s = idp.sessions()()
        s.execute(text("SELECT 1")).all()
        s.commit()
        assert g._db_commit_attempted
        s.close()
