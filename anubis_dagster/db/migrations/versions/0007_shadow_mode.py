"""integrations.shadow_since / shadow_ended_at: an integration's shadow run (issue 20)

Revision ID: 0007_shadow_mode
Revises: 0006_privacy_requests
Create Date: 2026-12-07 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_shadow_mode"
down_revision: str | None = "0006_privacy_requests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("integrations") as batch:
        batch.add_column(sa.Column("shadow_since", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("shadow_ended_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("integrations") as batch:
        batch.drop_column("shadow_ended_at")
        batch.drop_column("shadow_since")
