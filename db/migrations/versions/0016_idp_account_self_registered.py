"""accounts say whether a citizen registered them: unconfirmed self-registrations are purged

Revision ID: 0016_idp_account_self_registered
Revises: 0015_idp_grant_cnf_x5t
Create Date: 2026-11-24 12:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0016_idp_account_self_registered'
down_revision = '0015_idp_grant_cnf_x5t'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Accounts from before this column cannot be told apart: they count as not self-registered
    # (never purged), the safe side.
    with op.batch_alter_table('idp_account', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('self_registered', sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table('idp_account', schema=None) as batch_op:
        batch_op.drop_column('self_registered')
