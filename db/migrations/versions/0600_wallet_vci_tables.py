"""wallet: credential issuer tables (issue 16)

Revision ID: 0600_wallet_vci
Revises: 0001_base
Create Date: 2026-12-07 04:00:00
"""

import sqlalchemy as sa
from alembic import op

import db

revision = "0600_wallet_vci"
down_revision = "0001_base"
branch_labels = ("wallet_vci",)
depends_on = ("0010_idp",)  # foreign keys to idp_account


def upgrade() -> None:
    op.create_table(
        "vci_library_card",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("number_enc", sa.LargeBinary(), nullable=False),
        sa.Column("name_enc", sa.LargeBinary(), nullable=False),
        sa.Column("library", sa.String(length=200), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=False),
        sa.Column("created_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["idp_account.id"],
            name=op.f("fk_vci_library_card_account_id_idp_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vci_library_card")),
        sa.UniqueConstraint("account_id", name=op.f("uq_vci_library_card_account_id")),
    )
    op.create_table(
        "vci_status_entry",
        sa.Column("idx", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("card_id", sa.String(length=40), nullable=True),
        sa.Column("issued_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["card_id"],
            ["vci_library_card.id"],
            name=op.f("fk_vci_status_entry_card_id_vci_library_card"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("idx", name=op.f("pk_vci_status_entry")),
    )
    op.create_index(op.f("ix_vci_status_entry_card_id"), "vci_status_entry", ["card_id"], unique=False)
    op.create_table(
        "vci_offer",
        sa.Column("code_digest", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("tx_code_digest", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("expires_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["idp_account.id"],
            name=op.f("fk_vci_offer_account_id_idp_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("code_digest", name=op.f("pk_vci_offer")),
    )
    op.create_index(op.f("ix_vci_offer_account_id"), "vci_offer", ["account_id"], unique=False)
    op.create_table(
        "vci_access",
        sa.Column("token_digest", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("expires_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["idp_account.id"],
            name=op.f("fk_vci_access_account_id_idp_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_digest", name=op.f("pk_vci_access")),
    )
    op.create_index(op.f("ix_vci_access_account_id"), "vci_access", ["account_id"], unique=False)


def downgrade() -> None:
    op.drop_table("vci_access")
    op.drop_table("vci_offer")
    op.drop_table("vci_status_entry")
    op.drop_table("vci_library_card")
