"""grant bound to a device certificate: a public client's refresh tokens need that certificate

Revision ID: 0015_idp_grant_cnf_x5t
Revises: 0014_idp_mail_outbox
Create Date: 2026-11-24 10:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0015_idp_grant_cnf_x5t'
down_revision = '0014_idp_mail_outbox'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('idp_grant', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cnf_x5t', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('idp_grant', schema=None) as batch_op:
        batch_op.drop_column('cnf_x5t')
