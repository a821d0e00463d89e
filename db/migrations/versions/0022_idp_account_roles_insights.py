"""idp: staff roles on the account (analyst, admin) for the insights dashboard (issue 15)

Revision ID: 0021_idp_account_roles
Revises: 0020_idp_refresh_grace
Create Date: 2026-12-07 03:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0021_idp_account_roles"
down_revision = "0020_idp_refresh_grace"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idp_account") as batch:
        batch.add_column(sa.Column("roles", sa.String(length=100), server_default="", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("idp_account") as batch:
        batch.drop_column("roles")
