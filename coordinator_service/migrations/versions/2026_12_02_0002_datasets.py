"""registered datasets; federations name their datasets and tokenizer

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("items", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("shards", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index(op.f("ix_datasets_state"), "datasets", ["state"], unique=False)
    # batch mode: SQLite cannot add a foreign key to an existing table in place.
    with op.batch_alter_table("federations") as batch:
        batch.add_column(sa.Column("public_dataset_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("evaluation_dataset_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("tokenizer_sha256", sa.String(length=64), nullable=True))
        batch.create_index(batch.f("ix_federations_public_dataset_id"), ["public_dataset_id"], unique=False)
        batch.create_index(batch.f("ix_federations_evaluation_dataset_id"), ["evaluation_dataset_id"], unique=False)
        batch.create_foreign_key("fk_federations_public_dataset_id", "datasets", ["public_dataset_id"], ["id"])
        batch.create_foreign_key("fk_federations_evaluation_dataset_id", "datasets", ["evaluation_dataset_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("federations") as batch:
        batch.drop_constraint("fk_federations_evaluation_dataset_id", type_="foreignkey")
        batch.drop_constraint("fk_federations_public_dataset_id", type_="foreignkey")
        batch.drop_index(batch.f("ix_federations_evaluation_dataset_id"))
        batch.drop_index(batch.f("ix_federations_public_dataset_id"))
        batch.drop_column("tokenizer_sha256")
        batch.drop_column("evaluation_dataset_id")
        batch.drop_column("public_dataset_id")
    op.drop_index(op.f("ix_datasets_state"), table_name="datasets")
    op.drop_table("datasets")
