"""per client: allow_missing_pkce (PKCE is required of every client unless set) and the security
profile ("" or "fapi2")

Revision ID: 0020_idp_client_profile_sd
Revises: 0019_idp_instance_check
Create Date: 2026-12-07 03:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0020_idp_client_profile_sd'
down_revision = '0019_idp_instance_check'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('idp_client', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('allow_missing_pkce', sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column('profile', sa.String(length=20), server_default='', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('idp_client', schema=None) as batch_op:
        batch_op.drop_column('profile')
        batch_op.drop_column('allow_missing_pkce')
