"""signing: citizen signature requests (issue 13)

Revision ID: 0500_signing_citizen
Revises: 0001_base
Create Date: 2026-12-07 03:00:00
"""

import sqlalchemy as sa
from alembic import op

import db

revision = "0500_signing_citizen"
down_revision = "0001_base"
branch_labels = ("signing_citizen",)
depends_on = ("0010_idp", "0200_smartcard")  # foreign keys to idp_account and sc_device


def upgrade() -> None:
    op.create_table(
        "sg_citizen_request",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("service_name", sa.String(length=200), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("document_sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=5), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("document", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("created_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("prepared_device_id", sa.String(length=40), nullable=True),
        sa.Column("prepared_cert_sha256", sa.String(length=64), nullable=True),
        sa.Column("prepared_state", sa.LargeBinary(), nullable=True),
        sa.Column("device_id", sa.String(length=40), nullable=True),
        sa.Column("answered_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("signed_pdf", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["idp_account.id"],
            name=op.f("fk_sg_citizen_request_account_id_idp_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["prepared_device_id"],
            ["sc_device.id"],
            name=op.f("fk_sg_citizen_request_prepared_device_id_sc_device"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sg_citizen_request")),
    )
    with op.batch_alter_table("sg_citizen_request", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sg_citizen_request_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sg_citizen_request_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sg_citizen_request", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sg_citizen_request_expires_at"))
        batch_op.drop_index(batch_op.f("ix_sg_citizen_request_account_id"))
    op.drop_table("sg_citizen_request")
