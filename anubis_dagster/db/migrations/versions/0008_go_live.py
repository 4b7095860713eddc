"""integrations.go_live_at (the go-live point) and subscriptions.legacy_status (imported rows)

Revision ID: 0008_go_live
Revises: 0007_shadow_mode
Create Date: 2026-12-07 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_go_live"
down_revision: str | None = "0007_shadow_mode"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("integrations") as batch:
        batch.add_column(sa.Column("go_live_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("legacy_status", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("legacy_status")
    with op.batch_alter_table("integrations") as batch:
        batch.drop_column("go_live_at")
