"""The audit log is a hash chain: changes, removals and truncation are detected."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from db import audit, make_engine, transaction
from db.migrate import SchemaMismatch, check_schema


def _fill(db_sessions: sessionmaker[Session], n: int = 5) -> None:
    for i in range(n):
        with transaction(db_sessions) as s:
            audit.record(
                s,
                action="test.event",
                outcome="success",
                actor=f"user{i}",
                subject="acct-1",
                reason="because",
                details={"i": i},
            )


def test_intact_chain_verifies(db_sessions: sessionmaker[Session]) -> None:
    _fill(db_sessions)
    with db_sessions() as s:
        res = audit.verify(s)
    assert res.ok and res.entries == 5


def test_changed_entry_is_detected(db_sessions: sessionmaker[Session]) -> None:
    _fill(db_sessions)
    with transaction(db_sessions) as s:
        seq = s.execute(select(audit.AuditEvent.seq).order_by(audit.AuditEvent.seq)).scalars().all()[2]
        s.execute(update(audit.AuditEvent).where(audit.AuditEvent.seq == seq).values(outcome="failure"))
    with db_sessions() as s:
        res = audit.verify(s)
    assert not res.ok and res.first_bad_seq == seq


def test_changed_actor_is_detected(db_sessions: sessionmaker[Session]) -> None:
    _fill(db_sessions)
    with transaction(db_sessions) as s:
        s.execute(update(audit.AuditEvent).where(audit.AuditEvent.actor == "user1").values(actor="x"))
    with db_sessions() as s:
        assert audit.verify(s).problem == "actor or subject changed"


def test_removed_entry_is_detected(db_sessions: sessionmaker[Session]) -> None:
    _fill(db_sessions)
    with transaction(db_sessions) as s:
        s.execute(delete(audit.AuditEvent).where(audit.AuditEvent.actor == "user2"))
    with db_sessions() as s:
        assert not audit.verify(s).ok


def test_truncated_tail_is_detected(db_sessions: sessionmaker[Session]) -> None:
    _fill(db_sessions)
    with transaction(db_sessions) as s:
        s.execute(update(audit.AuditHead).values(last_seq=None))
        last = s.execute(select(audit.AuditEvent.seq).order_by(audit.AuditEvent.seq.desc())).scalar()
        s.execute(delete(audit.AuditEvent).where(audit.AuditEvent.seq == last))
    with db_sessions() as s:
        assert audit.verify(s).problem == "entries missing at the end of the chain"


def test_pseudonymisation_keeps_chain_verifiable_gdpr_art17(
    db_sessions: sessionmaker[Session],
) -> None:
    _fill(db_sessions)
    with transaction(db_sessions) as s:
        assert audit.pseudonymise(s, "acct-1", "erased:7f3a") == 5
    with db_sessions() as s:
        assert audit.verify(s).ok
        assert not s.execute(select(audit.AuditEvent).where(audit.AuditEvent.subject == "acct-1")).first()


def test_a_pseudonymised_flag_set_by_hand_does_not_hide_a_changed_actor(
    db_sessions: sessionmaker[Session],
) -> None:
    _fill(db_sessions)
    with transaction(db_sessions) as s:
        s.execute(
            update(audit.AuditEvent)
            .where(audit.AuditEvent.actor == "user1")
            .values(actor="mallory", subject="someone-else", pseudonymised=True)
        )
    with db_sessions() as s:
        assert audit.verify(s).problem == "marked pseudonymised but names no pseudonym"


def test_a_wiped_or_cut_log_without_its_head_record_is_detected(db_sessions: sessionmaker[Session]) -> None:
    _fill(db_sessions)
    with transaction(db_sessions) as s:
        s.execute(delete(audit.AuditHead))
        last = s.execute(select(audit.AuditEvent.seq).order_by(audit.AuditEvent.seq.desc())).scalar()
        s.execute(delete(audit.AuditEvent).where(audit.AuditEvent.seq == last))
    with db_sessions() as s:
        assert audit.verify(s).problem == "the chain's head record is missing"


def test_unmigrated_database_is_refused(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    try:
        check_schema(engine)
    except SchemaMismatch as exc:
        assert "cityid init" in str(exc)
    else:
        raise AssertionError("an empty database passed the schema check")


def test_newer_schema_is_refused(db_engine) -> None:
    with db_engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM alembic_version")
        conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES ('9999_future')")
    try:
        check_schema(db_engine)
    except SchemaMismatch as exc:
        assert "newer" in str(exc)
    else:
        raise AssertionError("a newer schema passed the schema check")


def test_migrated_database_passes(db_engine) -> None:
    check_schema(db_engine)


def test_entries_with_any_text_chain_identically_on_every_backend(db_sessions: sessionmaker[Session]) -> None:
    """PostgreSQL computes the entry hash in the append statement; it must be the hash that
    `cityid audit verify` recomputes, whatever the text (quotes, backslashes, umlauts, emoji,
    control characters, SQL)."""
    texts = [
        '"quoted" \\ back\\slash',
        "Müller-Lüdenscheidt ß",
        "🔐 \u2028 \x01\ttab\nline",
        "'); DROP--",
        "",
    ]
    with transaction(db_sessions) as s:
        for t in texts:
            audit.record(
                s, action=f"test.{t[:5]}", outcome="info", actor=t, subject=t, reason=t, details={t: t}
            )
    with db_sessions() as s:
        assert audit.verify(s).ok
        stored = s.execute(select(audit.AuditEvent).order_by(audit.AuditEvent.seq)).scalars().all()
        assert [e.actor for e in stored] == texts
        for e in stored:
            assert e.hash == audit._entry_hash(
                e.prev_hash, e.at, e.action, e.outcome, e.reason, e.details, e.party_commitment
            )


def test_concurrent_appends_form_one_unbroken_chain(db_sessions: sessionmaker[Session]) -> None:
    """Writers in several threads (as several workers would) queue on the head row: one order."""
    from concurrent.futures import ThreadPoolExecutor

    def append(i: int) -> None:
        for j in range(10):
            with transaction(db_sessions) as s:
                audit.record(s, action="test.concurrent", outcome="info", actor=f"w{i}", details={"j": j})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(append, range(8)))
    with db_sessions() as s:
        res = audit.verify(s)
    assert res.ok and res.entries == 80, res


def _rewrite_from(db_sessions: sessionmaker[Session], index: int) -> None:
    """What someone with write access to the database can do to an unkeyed chain: change an
    entry and recompute every hash after it, and the head."""
    ev = audit.AuditEvent
    with transaction(db_sessions) as s:
        rows = s.execute(select(ev).order_by(ev.seq)).scalars().all()
        rows[index].outcome = "failure"
        prev = rows[index].prev_hash
        for row in rows[index:]:
            row.prev_hash = prev
            row.hash = prev = audit._entry_hash(
                prev, row.at, row.action, row.outcome, row.reason, row.details, row.party_commitment
            )
        s.execute(update(audit.AuditHead).values(last_hash=prev))


def test_an_anchor_kept_outside_finds_a_rewritten_chain(db_sessions: sessionmaker[Session]) -> None:
    _fill(db_sessions, 5)
    with db_sessions() as s:
        earlier = audit.verify(s)
    assert earlier.ok and earlier.last_seq is not None and len(earlier.last_hash) == 64
    anchor = {earlier.last_seq: earlier.last_hash}
    _fill(db_sessions, 2)
    with transaction(db_sessions) as s:  # erasure after the anchor does not disturb it (Art. 17)
        audit.pseudonymise(s, "acct-1", f"{audit.PSEUDONYM_PREFIX}x")
    with db_sessions() as s:
        assert audit.verify(s, anchor).ok
    _rewrite_from(db_sessions, 2)
    with db_sessions() as s:
        assert audit.verify(s).ok  # the limit of an unkeyed chain on its own
        res = audit.verify(s, anchor)
    assert not res.ok and res.first_bad_seq == earlier.last_seq and "anchor" in res.problem


def test_an_anchor_finds_a_log_deleted_with_its_head(db_sessions: sessionmaker[Session]) -> None:
    _fill(db_sessions, 3)
    with db_sessions() as s:
        earlier = audit.verify(s)
    assert earlier.last_seq is not None
    with transaction(db_sessions) as s:
        s.execute(delete(audit.AuditHead))  # the head points at the last entry
        s.execute(delete(audit.AuditEvent))
    with db_sessions() as s:
        assert audit.verify(s).ok  # an empty log is consistent with itself
        res = audit.verify(s, {earlier.last_seq: earlier.last_hash})
    assert not res.ok and res.first_bad_seq == earlier.last_seq and "missing" in res.problem


def test_a_rolled_back_entry_leaves_no_gap_in_the_sequence_issue_19_2(
    db_sessions: sessionmaker[Session],
) -> None:
    _fill(db_sessions, 2)
    with db_sessions() as s:  # a request that appended its entry and then died before its commit
        audit.record(s, action="test.event", outcome="success", actor="gone", subject="acct-1")
        s.rollback()
    _fill(db_sessions, 2)
    with db_sessions() as s:
        seqs = s.execute(select(audit.AuditEvent.seq).order_by(audit.AuditEvent.seq)).scalars().all()
        res = audit.verify(s)
    assert seqs == [1, 2, 3, 4]
    assert res.ok and res.gaps == 0 and res.last_seq == 4


def test_verify_reports_unused_sequence_numbers_of_older_logs_as_gaps(
    db_sessions: sessionmaker[Session],
) -> None:
    _fill(db_sessions, 3)
    with transaction(db_sessions) as s:  # as an older release left them: numbers without entries
        s.execute(update(audit.AuditHead).values(last_seq=None))
        s.execute(update(audit.AuditEvent).where(audit.AuditEvent.seq == 3).values(seq=7))
        s.execute(update(audit.AuditHead).values(last_seq=7))
    _fill(db_sessions, 1)
    with db_sessions() as s:
        res = audit.verify(s)
        seqs = s.execute(select(audit.AuditEvent.seq).order_by(audit.AuditEvent.seq)).scalars().all()
    assert seqs == [1, 2, 7, 8]
    assert res.ok and (res.gaps, res.first_gap) == (4, 3)


@pytest.mark.postgresql_only
def test_an_uncommitted_audited_transaction_does_not_hold_back_other_writers_issue_19(
    db_sessions: sessionmaker[Session],
) -> None:
    """Instances add capacity, not contention: no audited transaction holds the chain head while
    it is open (and while its commit is flushed to disk), so another writer commits meanwhile.
    PostgreSQL only: SQLite serialises every writer at BEGIN IMMEDIATE by design."""
    slow = db_sessions()
    try:
        audit.record(slow, action="test.slow", outcome="info", actor="slow")  # open, not committed
        with transaction(db_sessions) as s:
            s.execute(text("SET LOCAL lock_timeout = '2s'"))  # would wait for `slow` to end
            audit.record(s, action="test.fast", outcome="info", actor="fast")
        slow.commit()
    finally:
        slow.close()
    with db_sessions() as s:
        res = audit.verify(s)
        actions = s.execute(select(audit.AuditEvent.action).order_by(audit.AuditEvent.seq)).scalars().all()
    assert actions == ["test.fast", "test.slow"]  # chained in the order they committed
    assert res.ok and res.gaps == 0 and res.pending == 0 and res.last_seq == 2


@pytest.mark.postgresql_only
def test_an_entry_committed_but_not_chained_when_its_process_died_is_chained_later_issue_19(
    db_sessions: sessionmaker[Session],
) -> None:
    """A process killed between its commit and the chaining leaves its entry committed but off
    the chain: verify counts it, the next chaining (any worker's background duty, or
    `cityid audit verify`) puts it on the chain with the next number."""
    _fill(db_sessions, 2)
    with db_sessions() as s:
        audit.record(s, action="test.orphan", outcome="success", actor="gone", subject="acct-1")
        s.info.pop(audit._PENDING_KEY)  # as if the process died right after its COMMIT
        s.commit()
    with db_sessions() as s:
        before = audit.verify(s)
    assert before.ok and before.entries == 2 and before.pending == 1
    assert audit.chain_pending(db_sessions.kw["bind"]) == 1
    with db_sessions() as s:
        after = audit.verify(s)
        last = s.execute(select(audit.AuditEvent).order_by(audit.AuditEvent.seq.desc())).scalars().first()
    assert after.ok and after.entries == 3 and after.pending == 0 and after.gaps == 0
    assert last is not None and (last.seq, last.action) == (3, "test.orphan")


@pytest.mark.postgresql_only
def test_the_chaining_commits_without_waiting_for_its_flush_and_only_its_own_transaction_issue_19(
    db_sessions: sessionmaker[Session],
) -> None:
    """PostgreSQL 15 docs 30.4: the chaining moves entries that are already durable in
    audit_pending, so its own commit need not wait for the disk (a crash that takes it back leaves
    them pending, to be chained again). The setting is the chaining transaction's own: the
    request's commit, before it, and every later transaction on the connection wait as before."""
    with db_sessions() as s:
        s.execute(text("SET synchronous_commit = on"))  # the session's own (tests' databases: off)
        audit.record(s, action="test.async", outcome="success", actor="a", subject="acct-1")
        assert s.execute(text("SHOW synchronous_commit")).scalar() == "on"  # the request's commit
        s.info.pop(audit._PENDING_KEY)  # chained by hand below, inside a transaction to look into
        s.commit()
        assert s.execute(text("SELECT cityid_audit_chain(NULL)")).scalar() == 1
        assert s.execute(text("SHOW synchronous_commit")).scalar() == "off"  # this transaction's
        s.commit()
        assert s.execute(text("SHOW synchronous_commit")).scalar() == "on"  # and only its own
        s.execute(text("RESET synchronous_commit"))  # the pooled connection as it was
        s.commit()
    with db_sessions() as s:
        assert audit.verify(s).ok


@pytest.mark.postgresql_only
def test_audit_verify_reads_the_chain_only_once_it_is_on_disk_issue_19(
    db_sessions: sessionmaker[Session],
) -> None:
    """`cityid audit verify` reports the last hash as an anchor to keep outside the database: it
    asks chain_pending(durable=True) first, which returns once the WAL up to every chaining so
    far (asynchronous commits) is flushed, so no crash can take back the anchor it prints."""
    engine = db_sessions.kw["bind"]
    with db_sessions() as s:
        s.execute(text("SET synchronous_commit = off"))
        audit.record(s, action="test.anchor", outcome="success", actor="a", subject="acct-1")
        s.commit()  # chained right after, asynchronously
        written = s.execute(text("SELECT pg_current_wal_insert_lsn()")).scalar()
        s.execute(text("RESET synchronous_commit"))  # the pooled connection as it was
        s.commit()
    audit.chain_pending(engine, durable=True)
    with db_sessions() as s:
        flushed = s.execute(text("SELECT pg_current_wal_flush_lsn() >= CAST(:w AS pg_lsn)"), {"w": written})
        assert flushed.scalar() is True
        res = audit.verify(s)
    assert res.ok and res.pending == 0 and res.entries == 1


@pytest.mark.postgresql_only
def test_a_full_chaining_takes_every_pending_entry_in_batches_and_a_requests_from_its_own_on_issue_19(
    db_sessions: sessionmaker[Session],
) -> None:
    """A request's chaining starts at its transaction's first entry (a primary-key lookup and an
    index range, so that the dead rows earlier chainings left in audit_pending are never read);
    an older entry whose own chaining never ran stays pending until a full chaining (the
    background duty, verify) takes it, with every other one, in batches of 1,000."""
    with transaction(db_sessions) as s:
        for i in range(2_100):
            audit.record(s, action="test.orphan", outcome="info", actor="gone", details={"i": i})
        s.info.pop(audit._PENDING_KEY)  # as if the process died right after its COMMIT
    with transaction(db_sessions) as s:  # a later request: its own chaining after the commit
        audit.record(s, action="test.later", outcome="success", actor="a", subject="acct-1")
    with db_sessions() as s:
        res = audit.verify(s)
        assert res.ok and res.entries == 1 and res.pending == 2_100
        assert s.execute(select(audit.AuditEvent.action)).scalars().all() == ["test.later"]
    assert audit.chain_pending(db_sessions.kw["bind"]) == 2_100
    with db_sessions() as s:
        res = audit.verify(s)
        details = s.execute(select(audit.AuditEvent.details).order_by(audit.AuditEvent.seq)).scalars().all()
    assert res.ok and res.entries == 2_101 and res.pending == 0 and res.gaps == 0
    assert details[1:] == [f'{{"i": {i}}}' for i in range(2_100)]  # in the order they were written


def test_an_entry_written_before_a_savepoint_is_on_the_chain_after_the_commit(
    db_sessions: sessionmaker[Session],
) -> None:
    """A savepoint (begin_nested: the mail outbox, a consent upsert) that ends inside the
    transaction is not the transaction's end: the entry recorded before it commits with the
    transaction and is chained right after, with nothing left pending (both databases)."""
    with transaction(db_sessions) as s:
        audit.record(s, action="test.before", outcome="success", actor="admin", subject="acct-1")
        with s.begin_nested():
            s.execute(text("SELECT 1"))
    with db_sessions() as s:
        res = audit.verify(s)
        actions = s.execute(select(audit.AuditEvent.action)).scalars().all()
    assert res.ok and res.pending == 0 and actions == ["test.before"]
