"""check values of the instance's secrets: a command run with another cityid.toml is refused
instead of writing data no one can read

Revision ID: 0019_idp_instance_check
Revises: 0018_idp_mail_outbox_account
Create Date: 2026-11-24 13:30:00
"""
from alembic import op
import sqlalchemy as sa
import db


revision = '0019_idp_instance_check'
down_revision = '0018_idp_mail_outbox_account'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'idp_instance_check',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('secret_check', sa.String(length=64), nullable=False),
        sa.Column('passphrase_check', sa.String(length=64), nullable=False),
        sa.Column('created_at', db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_idp_instance_check')),
    )


def downgrade() -> None:
    op.drop_table('idp_instance_check')
