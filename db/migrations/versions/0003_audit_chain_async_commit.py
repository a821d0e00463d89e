"""the audit chaining: no WAL flush of its own, and a scan that dead rows do not slow (PostgreSQL)

Two costs of ``cityid_audit_chain()`` (0002_audit_pending), found by sampling ``pg_stat_activity``
under ``bench/instances.py`` and measured with ``pg_stat_wal``:

1. It ran in a transaction of its own that waited for its WAL flush like any other commit: every
   audited request paid two flushes (1.6 ``wal_sync`` per client-credentials token, 0.7 after this
   change), and the chaining held the chain head's row lock while its flush was written, so that
   concurrent chainers of every instance queued behind one fsync (the chaining was the statement
   most often waiting on ``WALSync``, and the only one waiting on row locks). The chaining needs
   no flush of its own (PostgreSQL 15 docs, 30.4 *Asynchronous Commit*: a crash may lose the most
   recent asynchronous commits, never part of one, and the database stays consistent). What it
   moves is already durable: the entries were committed in ``audit_pending`` with the request's
   own synchronous commit. If a crash takes the chaining back, its DELETE from ``audit_pending``
   goes with its INSERTs into ``audit_event``, and the entries are chained again. So the function
   turns ``synchronous_commit`` off for its own transaction (``set_config(..., true)``: local to
   the transaction; the chaining runs as one autocommit statement, db.audit.chain_committed).
   ``cityid audit verify`` flushes before it reads (db.audit.chain_pending(durable=True)), so the
   anchor it prints is never one a crash can take back.
2. It found the pending entries by scanning the whole of ``audit_pending`` (``id <= upto OR upto IS
   NULL``, and a DELETE of every row): every chained entry leaves a dead row there until VACUUM,
   and with autovacuum off (as on this project's development machines) or behind, each chaining
   read all of them (178 pages after 90 s of load). Now a request's chaining looks up its
   transaction's first entry by primary key and takes the committed entries from it on, through
   the primary key's index, in batches of 1,000 in id order. An entry older than the caller's
   whose own chaining never ran (its process died, its connection was lost) is taken by the next
   full chaining: ``since`` NULL, run by every worker's background duty every few seconds, by
   ``cityid audit verify`` and by erasure. The function's statements are planned once per
   database connection (PL/pgSQL caches a generic plan after five runs); planned while the table
   was small (it is never analysed with autovacuum off), even the lookup by primary key was a
   sequential scan, 1.5 per token, each reading the dead rows up to the newest entry, and the
   two-instance phases of ``bench/instances.py`` got slower round after round (476, 370, 336,
   282 operations/s). ``enable_seqscan`` is off for the chaining's transaction, so that every plan
   it makes uses the index (after: 1 sequential scan in 50 s of load, the rate flat).

Revision ID: 0003_audit_chain_async
Revises: 0002_audit_pending
Create Date: 2026-12-08 00:00:00
"""

import importlib

from alembic import op

# 0002's function, for downgrade()
PREVIOUS = importlib.import_module("db.migrations.versions.0002_audit_pending").CHAIN
# the parameter's name changes (upto: the caller's last entry; since: its first), which CREATE OR
# REPLACE cannot do
DROP = "DROP FUNCTION cityid_audit_chain(bigint)"

revision = "0003_audit_chain_async"
down_revision = "0002_audit_pending"
branch_labels = None
depends_on = None

# The function of 0002_audit_pending with two changes, {async} and the batched scan from the
# caller's own entry (see the module's text); downgrade() puts 0002's back.
BODY = """
CREATE FUNCTION cityid_audit_chain(since bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  prev text;
  seq_no bigint;
  entry record;
  n integer := 0;
  taken integer;
  low bigint := COALESCE(since, 0);
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  -- by the primary key's index, never by a sequential scan over the dead rows, whatever the
  -- table's statistics said when this backend planned these statements (see the module's text)
  PERFORM set_config('enable_seqscan', 'off', true);
  IF since IS NOT NULL THEN
    -- the caller's first entry, by primary key: gone when another chaining took it meanwhile (the
    -- entries of one transaction commit together and are chained together)
    IF NOT EXISTS (SELECT 1 FROM audit_pending WHERE id = since) THEN
      RETURN 0;
    END IF;
  ELSIF NOT EXISTS (SELECT 1 FROM audit_pending) THEN
    RETURN 0;
  END IF;
  SELECT last_hash, last_seq INTO prev, seq_no FROM audit_head WHERE id = 1 FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO audit_head (id, last_hash, last_seq) VALUES (1, repeat('0', 64), NULL)
      ON CONFLICT (id) DO NOTHING;
    SELECT last_hash, last_seq INTO prev, seq_no FROM audit_head WHERE id = 1 FOR UPDATE;
  END IF;
  seq_no := COALESCE(seq_no, 0);
  LOOP
    taken := 0;
    FOR entry IN
      WITH taken_rows AS (
        DELETE FROM audit_pending WHERE id = ANY (ARRAY(
          SELECT id FROM audit_pending WHERE id >= low ORDER BY id LIMIT 1000))
        RETURNING *)
      SELECT * FROM taken_rows ORDER BY id
    LOOP
      seq_no := seq_no + 1;
      INSERT INTO audit_event (seq, at, actor, action, outcome, subject, reason, details, salt,
                               party_commitment, pseudonymised, prev_hash, hash)
      VALUES (seq_no, entry.at, entry.actor, entry.action, entry.outcome, entry.subject,
              entry.reason, entry.details, entry.salt, entry.party_commitment, false, prev,
              encode(sha256(convert_to('["' || prev || '",' || entry.tail, 'UTF8')), 'hex'))
      RETURNING hash INTO prev;
      n := n + 1;
      taken := taken + 1;
      low := entry.id + 1;
    END LOOP;
    EXIT WHEN taken < 1000;
  END LOOP;
  IF n > 0 THEN
    UPDATE audit_head SET last_hash = prev, last_seq = seq_no WHERE id = 1;
  END IF;
  RETURN n;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DROP)
        op.execute(BODY)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SELECT cityid_audit_chain(NULL)")
        op.execute(DROP)
        op.execute(PREVIOUS)
