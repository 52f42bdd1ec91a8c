"""jobs: lost workers and environment holds counted apart from attempts; retry backoff

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lease_losses", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("holds", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("held_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("held_reason")
        batch.drop_column("not_before")
        batch.drop_column("holds")
        batch.drop_column("lease_losses")
