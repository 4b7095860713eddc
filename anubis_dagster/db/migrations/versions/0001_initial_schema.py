"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 20:04:06.497079
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "cursors",
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "integrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("type", sa.String(length=60), nullable=False),
        sa.Column("key", sa.String(length=60), nullable=False),
        sa.Column("interval", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_table(
        "names",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("gender", sa.String(length=1), nullable=False),
        sa.Column("frequency", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "gender"),
    )
    op.create_table(
        "rate_limit_buckets",
        sa.Column("bucket", sa.String(length=80), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("priority_demand_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("bucket"),
    )
    op.create_table(
        "rate_limit_slots",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("bucket", sa.String(length=80), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rate_limit_slots", schema=None) as batch_op:
        batch_op.create_index(
            "ix_rate_limit_slots_bucket_taken", ["bucket", "taken_at"], unique=False
        )

    op.create_table(
        "catalog_cache",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
        ),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "integration_filters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("filter", sa.JSON(), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("integration_id", "position"),
    )
    op.create_table(
        "integration_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("integration_id", "key"),
    )
    op.create_table(
        "subscriptions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("integration_filter_id", sa.Integer(), nullable=True),
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("origin", sa.String(length=40), nullable=True),
        sa.Column("cpf", sa.String(length=14), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scheduled_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("active_cpf", sa.String(length=14), nullable=True),
        sa.Column("order_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sending_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("gender", sa.String(length=2), nullable=True),
        sa.Column("first_name", sa.String(length=80), nullable=True),
        sa.Column("external_id", sa.String(length=80), nullable=True),
        sa.Column("ies_data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_filter_id"],
            ["integration_filters.id"],
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("integration_id", "active_cpf", name="uq_subscriptions_active_cpf"),
        sa.UniqueConstraint(
            "integration_id", "order_id", name="uq_subscriptions_integration_order"
        ),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index("ix_subscriptions_cpf", ["cpf"], unique=False)
        batch_op.create_index(
            "ix_subscriptions_due", ["integration_id", "status", "scheduled_to"], unique=False
        )
        batch_op.create_index("ix_subscriptions_status", ["status"], unique=False)
        batch_op.create_index(
            "ix_subscriptions_first_name_gender", ["first_name", "gender"], unique=False
        )

    op.create_table(
        "follow_ups",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "subscription_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("external_id", sa.String(length=80), nullable=True),
        sa.Column("external_dealer_id", sa.String(length=80), nullable=True),
        sa.Column("source", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscription_id"),
    )
    op.create_table(
        "subscription_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "subscription_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("status", sa.String(length=40), nullable=True),
        sa.Column("operation_name", sa.String(length=60), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("request", sa.JSON(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("model", sa.String(length=60), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=True),
        sa.Column("dagster_run_id", sa.String(length=64), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("subscription_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_subscription_events_integration_created",
            ["integration_id", "created_at"],
            unique=False,
        )
        batch_op.create_index("ix_subscription_events_run", ["dagster_run_id"], unique=False)
        batch_op.create_index(
            "ix_subscription_events_subscription", ["subscription_id", "id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("subscription_events", schema=None) as batch_op:
        batch_op.drop_index("ix_subscription_events_subscription")
        batch_op.drop_index("ix_subscription_events_run")
        batch_op.drop_index("ix_subscription_events_integration_created")

    op.drop_table("subscription_events")
    op.drop_table("follow_ups")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index("ix_subscriptions_status")
        batch_op.drop_index("ix_subscriptions_due")
        batch_op.drop_index("ix_subscriptions_cpf")

    op.drop_table("subscriptions")
    op.drop_table("integration_tokens")
    op.drop_table("integration_filters")
    op.drop_table("catalog_cache")
    with op.batch_alter_table("rate_limit_slots", schema=None) as batch_op:
        batch_op.drop_index("ix_rate_limit_slots_bucket_taken")

    op.drop_table("rate_limit_slots")
    op.drop_table("rate_limit_buckets")
    op.drop_table("names")
    op.drop_table("integrations")
    op.drop_table("cursors")
