"""integrations.shadow_since / shadow_ended_at: an integration's shadow run (issue 20)

Revision ID: t20c_shadow
Revises: t22b_privacy
Create Date: 2026-12-07 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "t20c_shadow"
down_revision: str | None = "t22b_privacy"
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
