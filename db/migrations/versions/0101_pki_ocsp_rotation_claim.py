"""issuing CA row: when an OCSP signer rotation was claimed, so that only one worker rotates

Revision ID: 0101_pki_ocsp_rotation_claim
Revises: 0100_pki
Create Date: 2026-11-24 13:40:00
"""
from alembic import op
import sqlalchemy as sa
import db


revision = '0101_pki_ocsp_rotation_claim'
down_revision = '0100_pki'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ca_authority', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rotation_claimed_at', db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('ca_authority', schema=None) as batch_op:
        batch_op.drop_column('rotation_claimed_at')
