"""intake_quarantine: paid orders intake could not process, with their reasons

Revision ID: 0003_intake_quarantine
Revises: 0002_anonymized_at
Create Date: 2026-11-27 18:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_intake_quarantine"
down_revision: str | None = "0002_anonymized_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "intake_quarantine",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("integration_key", sa.String(length=60), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("order_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dagster_run_id", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("order_id", "integration_key", name="uq_intake_quarantine_order"),
    )
    with op.batch_alter_table("intake_quarantine", schema=None) as batch_op:
        batch_op.create_index("ix_intake_quarantine_open", ["resolved_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("intake_quarantine", schema=None) as batch_op:
        batch_op.drop_index("ix_intake_quarantine_open")
    op.drop_table("intake_quarantine")
