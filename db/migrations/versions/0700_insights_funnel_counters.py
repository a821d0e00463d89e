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
        sqlite_with_rowid=False,
    )
    op.create_index("ix_insights_funnel_service_hour", "insights_funnel_hourly", ["service", "hour"])
    op.create_table(
        "insights_funnel_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=20), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("level_asked", sa.String(length=12), nullable=False),
        sa.Column("level_reached", sa.String(length=12), nullable=False),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day",
            "service",
            "step",
            "outcome",
            "level_asked",
            "level_reached",
            "method",
            name=op.f("pk_insights_funnel_daily"),
        ),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_insights_daily_service_day", "insights_funnel_daily", ["service", "day"])
    op.create_index(
        "ix_insights_daily_step_day", "insights_funnel_daily", ["step", "outcome", "day", "service", "count"]
    )
    op.create_table(
        "insights_funnel_monthly",
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=20), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("level_asked", sa.String(length=12), nullable=False),
        sa.Column("level_reached", sa.String(length=12), nullable=False),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "month",
            "service",
            "step",
            "outcome",
            "level_asked",
            "level_reached",
            "method",
            name=op.f("pk_insights_funnel_monthly"),
        ),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_insights_monthly_service_month", "insights_funnel_monthly", ["service", "month"])
    op.create_table(
        "insights_funnel_total",
        sa.Column("step", sa.String(length=20), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("level_reached", sa.String(length=12), nullable=False),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "step", "outcome", "level_reached", "method", name=op.f("pk_insights_funnel_total")
        ),
    )
    op.create_table(
        "insights_rollup_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rolled_until", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_insights_rollup_state")),
    )


def downgrade() -> None:
    op.drop_table("insights_rollup_state")
    op.drop_table("insights_funnel_total")
    op.drop_index("ix_insights_monthly_service_month", table_name="insights_funnel_monthly")
    op.drop_table("insights_funnel_monthly")
    op.drop_index("ix_insights_daily_step_day", table_name="insights_funnel_daily")
    op.drop_index("ix_insights_daily_service_day", table_name="insights_funnel_daily")
    op.drop_table("insights_funnel_daily")
    op.drop_index("ix_insights_funnel_service_hour", table_name="insights_funnel_hourly")
    op.drop_table("insights_funnel_hourly")
