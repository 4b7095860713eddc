"""event_outbox: events for other services, published to Kafka (issue 25)

Revision ID: 0010_event_outbox
Revises: 0009_scale_indexes
Create Date: 2026-12-07 03:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_event_outbox"
down_revision: str | None = "0009_scale_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("event_type", sa.String(60), nullable=False),
        sa.Column("subscription_id", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("publish_attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.UniqueConstraint("event_id", name="uq_event_outbox_event_id"),
    )
    # the publisher's queue: only the waiting rows, so a marked row leaves the index
    waiting = sa.text("published_at IS NULL")
    op.create_index(
        "ix_event_outbox_unpublished",
        "event_outbox",
        ["id"],
        postgresql_where=waiting,
        sqlite_where=waiting,
    )


def downgrade() -> None:
    op.drop_index("ix_event_outbox_unpublished", table_name="event_outbox")
    op.drop_table("event_outbox")
