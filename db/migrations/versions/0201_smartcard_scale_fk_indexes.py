"""smartcard: indexes on the foreign keys a device's or grant's removal deletes by (bench/scale.py)

Removing a device (revocation, erasure) looks up its challenges by device_id; removing a grant
cascades to sc_device_grant by grant_id, the second column of its primary key. Without these
indexes each read the whole table.

Revision ID: 0201_smartcard_scale
Revises: 0200_smartcard
Create Date: 2026-12-07 04:00:00
"""

from alembic import op

revision = "0201_smartcard_scale"
down_revision = "0200_smartcard"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sc_challenge_device_id", "sc_challenge", ["device_id"])
    op.create_index("ix_sc_device_grant_grant_id", "sc_device_grant", ["grant_id"])


def downgrade() -> None:
    op.drop_index("ix_sc_device_grant_grant_id", table_name="sc_device_grant")
    op.drop_index("ix_sc_challenge_device_id", table_name="sc_challenge")
