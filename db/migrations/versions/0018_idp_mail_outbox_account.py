"""mail outbox rows name their account: an erasure removes mails still waiting for it

Revision ID: 0018_idp_mail_outbox_account
Revises: 0017_idp_audit_actor_index
Create Date: 2026-11-24 13:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0018_idp_mail_outbox_account'
down_revision = '0017_idp_audit_actor_index'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('idp_mail_outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('account_id', sa.String(length=40), nullable=True))
        batch_op.create_index(batch_op.f('ix_idp_mail_outbox_account_id'), ['account_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('idp_mail_outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idp_mail_outbox_account_id'))
        batch_op.drop_column('account_id')
