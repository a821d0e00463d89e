"""insights: hourly login funnel counters, no personal data (issue 15)

Revision ID: 0600_insights
Revises: 0001_base
Create Date: 2026-12-07 03:40:00
"""

import sqlalchemy as sa
from alembic import op

import db

revision = "0600_insights"
down_revision = "0001_base"
branch_labels = ("insights",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "insights_funnel_hourly",
        sa.Column("hour", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=20), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("level_asked", sa.String(length=12), nullable=False),
        sa.Column("level_reached", sa.String(length=12), nullable=False),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("platform", sa.String(length=20), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "hour",
            "service",
            "step",
            "outcome",
            "level_asked",
            "level_reached",
            "method",
            "language",
            "platform",
            name=op.f("pk_insights_funnel_hourly"),
        ),
    )
    op.create_index("ix_insights_funnel_service_hour", "insights_funnel_hourly", ["service", "hour"])


def downgrade() -> None:
    op.drop_index("ix_insights_funnel_service_hour", table_name="insights_funnel_hourly")
    op.drop_table("insights_funnel_hourly")
