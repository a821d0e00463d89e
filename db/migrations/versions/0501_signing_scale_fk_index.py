"""signing: index on sg_citizen_request.prepared_device_id (removing a device sets it NULL)

Revision ID: 0501_signing_scale
Revises: 0500_signing_citizen
Create Date: 2026-12-07 04:00:00
"""

from alembic import op

revision = "0501_signing_scale"
down_revision = "0500_signing_citizen"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sg_citizen_request_prepared_device_id", "sg_citizen_request", ["prepared_device_id"])


def downgrade() -> None:
    op.drop_index("ix_sg_citizen_request_prepared_device_id", table_name="sg_citizen_request")
