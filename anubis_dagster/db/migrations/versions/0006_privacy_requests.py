"""privacy_requests: the audit trail of data-subject requests (issue 22, LGPD art. 18)

Revision ID: 0006_privacy_requests
Revises: 0005_integration_pause
Create Date: 2026-12-07 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_privacy_requests"
down_revision: str | None = "0005_integration_pause"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "privacy_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("subject_hash", sa.String(64), nullable=True),
        sa.Column("requested_via", sa.String(20), nullable=False),
        sa.Column("dagster_run_id", sa.String(64), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("privacy_requests")
