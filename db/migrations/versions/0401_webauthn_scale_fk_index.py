"""webauthn: index on webauthn_challenge.account_id (an erasure deletes by it; bench/scale.py)

Revision ID: 0401_webauthn_scale
Revises: 0400_webauthn
Create Date: 2026-12-07 04:00:00
"""

from alembic import op

revision = "0401_webauthn_scale"
down_revision = "0400_webauthn"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_webauthn_challenge_account_id", "webauthn_challenge", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_webauthn_challenge_account_id", table_name="webauthn_challenge")
