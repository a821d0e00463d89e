"""mail outbox: e-mails are sent after the transaction that issues their link commits

Revision ID: 0014_idp_mail_outbox
Revises: 0013_idp_email_change
Create Date: 2026-11-24 08:10:00
"""
from alembic import op
import sqlalchemy as sa
import db


revision = '0014_idp_mail_outbox'
down_revision = '0013_idp_email_change'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'idp_mail_outbox',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('created_at', db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('next_attempt_at', db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('recipient_enc', sa.LargeBinary(), nullable=False),
        sa.Column('message_enc', sa.LargeBinary(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_idp_mail_outbox')),
    )
    with op.batch_alter_table('idp_mail_outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_idp_mail_outbox_next_attempt_at'), ['next_attempt_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('idp_mail_outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idp_mail_outbox_next_attempt_at'))
    op.drop_table('idp_mail_outbox')
