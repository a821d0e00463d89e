"""index on the audit log's actor: an erasure finds an account's entries as actor or subject

Without it every erasure (and the purge of unconfirmed registrations) read the whole log,
holding the write lock for as long.

Revision ID: 0017_idp_audit_actor_index
Revises: 0016_idp_account_self_registered
Create Date: 2026-11-24 13:00:00
"""
from alembic import op


revision = '0017_idp_audit_actor_index'
down_revision = '0016_idp_account_self_registered'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_event_actor'), ['actor'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_event_actor'))
