"""partner_breakers: the circuit breaker of each partner API, shared by every process (issue 21)

Revision ID: 0011_partner_breakers
Revises: 0010_event_outbox
Create Date: 2026-12-07 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_partner_breakers"
down_revision: str | None = "0010_event_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "partner_breakers",
        sa.Column("api", sa.String(60), primary_key=True),
        sa.Column("phase", sa.String(20), nullable=False, server_default="closed"),
        sa.Column("streak", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("streak_ids", sa.JSON(), nullable=False),
        sa.Column("streak_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_probe_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("probe_seconds", sa.Float(), nullable=False, server_default="0"),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("integration_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("partner_breakers")
