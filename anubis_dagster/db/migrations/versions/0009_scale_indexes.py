"""indexes for the app DB at cutover size (issue 20): the read paths stay indexed at 1,000,000
subscriptions and 5,000,000 events

- `ix_subscriptions_order_id`: `anubis student ORDER` (the unique key leads with the integration)
- `ix_subscriptions_integration_created`: the report's, health's and metrics' windows
- `ix_subscriptions_open` (partial, the statuses some flow still works on): the due sensor's
  and the health backlog's lookups read the few open rows, not the final ones
- `ix_subscription_events_attempts` (partial, `kind = 'attempt'`): `anubis status`'s attempt
  counts and the report's calls per registration, from the index alone
- `ix_subscription_events_retries` (partial, `kind = 'retry'`): the report's retry rate and the
  retry anomaly

On PostgreSQL each index is built while the table is locked for writes (a minute at most at
the cutover size, measured in BENCHMARKS.md); run the upgrade before the services start.

Revision ID: 0009_scale_indexes
Revises: 0008_go_live
Create Date: 2026-12-07 03:00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0009_scale_indexes"
down_revision: str | None = "0008_go_live"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: the statuses a deliver or check flow works on (frozen here: a migration does not follow
#: later code; `db.models.OPEN_STATUSES` must name the same)
OPEN = (
    "to_sync",
    "course_failed",
    "to_sync_lgpd",
    "sync_lgpd_failed",
    "to_register",
    "awaiting_register",
    "registered",
)


def _where(condition: str) -> dict[str, Any]:
    return {"postgresql_where": sa.text(condition), "sqlite_where": sa.text(condition)}


def upgrade() -> None:
    open_statuses = "status IN ({})".format(", ".join(f"'{s}'" for s in OPEN))
    op.create_index("ix_subscriptions_order_id", "subscriptions", ["order_id"])
    op.create_index(
        "ix_subscriptions_integration_created", "subscriptions", ["integration_id", "created_at"]
    )
    op.create_index(
        "ix_subscriptions_open",
        "subscriptions",
        ["integration_id", "status", "scheduled_to"],
        **_where(open_statuses),
    )
    op.create_index(
        "ix_subscription_events_attempts",
        "subscription_events",
        ["integration_id", "operation_name", "outcome", "subscription_id"],
        **_where("kind = 'attempt'"),
    )
    op.create_index(
        "ix_subscription_events_retries",
        "subscription_events",
        ["integration_id", "created_at", "subscription_id"],
        **_where("kind = 'retry'"),
    )


def downgrade() -> None:
    op.drop_index("ix_subscription_events_retries", "subscription_events")
    op.drop_index("ix_subscription_events_attempts", "subscription_events")
    op.drop_index("ix_subscriptions_open", "subscriptions")
    op.drop_index("ix_subscriptions_integration_created", "subscriptions")
    op.drop_index("ix_subscriptions_order_id", "subscriptions")
