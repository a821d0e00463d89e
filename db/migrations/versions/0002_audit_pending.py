"""audit entries committed before they are chained (PostgreSQL): audit_pending, cityid_audit_chain()

On PostgreSQL a transaction's audit entry is a row of ``audit_pending``, written without any lock;
right after the commit, ``cityid_audit_chain()`` moves every committed pending entry onto the hash
chain in one short transaction of its own (db.audit). Before, every audited transaction locked the
chain head until its commit had been flushed to disk: all writers of all instances waited for one
another's fsync (issue 19, bench/instances.py). SQLite keeps appending in the writer's transaction
(its writers are serialised at BEGIN anyway); the table exists there too, empty.

Revision ID: 0002_audit_pending
Revises: 0001_base
Create Date: 2026-12-07 06:30:00
"""

import sqlalchemy as sa
from alembic import op

import db

revision = "0002_audit_pending"
down_revision = "0001_base"
branch_labels = ("audit_pending",)
depends_on = None

# Chains the committed pending entries, oldest first, under the head row's lock, and removes them
# from audit_pending in the same transaction: each entry gets exactly one sequence number, with no
# gap (issue 19). ``upto``: the caller's last pending id; when none up to it is left (another
# caller chained them while this one waited), nothing is done. The hash is computed over the same
# UTF-8 text as db.audit._entry_hash: '["' || prev || '",' || tail, the tail written by Python.
CHAIN = """
CREATE FUNCTION cityid_audit_chain(upto bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  prev text;
  seq_no bigint;
  entry record;
  n integer := 0;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM audit_pending WHERE upto IS NULL OR id <= upto) THEN
    RETURN 0;
  END IF;
  SELECT last_hash, last_seq INTO prev, seq_no FROM audit_head WHERE id = 1 FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO audit_head (id, last_hash, last_seq) VALUES (1, repeat('0', 64), NULL)
      ON CONFLICT (id) DO NOTHING;
    SELECT last_hash, last_seq INTO prev, seq_no FROM audit_head WHERE id = 1 FOR UPDATE;
  END IF;
  seq_no := COALESCE(seq_no, 0);
  FOR entry IN
    WITH taken AS (DELETE FROM audit_pending RETURNING *) SELECT * FROM taken ORDER BY id
  LOOP
    seq_no := seq_no + 1;
    INSERT INTO audit_event (seq, at, actor, action, outcome, subject, reason, details, salt,
                             party_commitment, pseudonymised, prev_hash, hash)
    VALUES (seq_no, entry.at, entry.actor, entry.action, entry.outcome, entry.subject, entry.reason,
            entry.details, entry.salt, entry.party_commitment, false, prev,
            encode(sha256(convert_to('["' || prev || '",' || entry.tail, 'UTF8')), 'hex'))
    RETURNING hash INTO prev;
    n := n + 1;
  END LOOP;
  IF n > 0 THEN
    UPDATE audit_head SET last_hash = prev, last_seq = seq_no WHERE id = 1;
  END IF;
  RETURN n;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "audit_pending",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("salt", sa.String(length=32), nullable=False),
        sa.Column("party_commitment", sa.String(length=64), nullable=False),
        sa.Column("tail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_pending")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CHAIN)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SELECT cityid_audit_chain(NULL)")  # nothing committed is left unchained
        op.execute("DROP FUNCTION cityid_audit_chain(bigint)")
    op.drop_table("audit_pending")
