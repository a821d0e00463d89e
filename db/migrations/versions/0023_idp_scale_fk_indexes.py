"""indexes on the foreign keys an erasure deletes by (bench/scale.py found the seq scans)

An account erasure (idp.privacy.erase_account) deletes its sessions, its grants' codes and its
e-mail links by these columns; without an index each delete read the whole table (5 million
accounts: every session, code and link), holding the row locks for as long.

Revision ID: 0021_idp_scale_fk_indexes
Revises: 0021_idp_account_roles
Create Date: 2026-12-07 04:00:00
"""

from alembic import op

revision = "0021_idp_scale_fk_indexes"
down_revision = "0021_idp_account_roles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_idp_session_account_id", "idp_session", ["account_id"])
    op.create_index("ix_idp_code_grant_id", "idp_code", ["grant_id"])
    op.create_index("ix_idp_email_token_account_id", "idp_email_token", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_idp_email_token_account_id", table_name="idp_email_token")
    op.drop_index("ix_idp_code_grant_id", table_name="idp_code")
    op.drop_index("ix_idp_session_account_id", table_name="idp_session")
