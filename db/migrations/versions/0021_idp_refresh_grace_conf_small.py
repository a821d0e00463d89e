"""a rotated refresh token keeps its rotation's answer, sealed, for the grace window in which the
same client's retry gets the same tokens again (issue 18 item 6); an authorization request sent
as a POST is kept as a front-channel pushed request (issue 18 item 8)

Revision ID: 0020_idp_refresh_grace
Revises: 0020_idp_client_profile_sd
Create Date: 2026-12-07 03:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0020_idp_refresh_grace'
down_revision = '0020_idp_client_profile_sd'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('idp_refresh_token') as batch:
        batch.add_column(sa.Column('answer_sealed', sa.LargeBinary(), nullable=True))
    op.create_index(
        'ix_idp_refresh_token_answer',
        'idp_refresh_token',
        ['grant_id'],
        sqlite_where=sa.text('answer_sealed IS NOT NULL'),
        postgresql_where=sa.text('answer_sealed IS NOT NULL'),
    )
    with op.batch_alter_table('idp_pushed_request') as batch:
        batch.add_column(
            sa.Column('front_channel', sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    op.drop_index('ix_idp_refresh_token_answer', table_name='idp_refresh_token')
    with op.batch_alter_table('idp_pushed_request') as batch:
        batch.drop_column('front_channel')
    with op.batch_alter_table('idp_refresh_token') as batch:
        batch.drop_column('answer_sealed')
