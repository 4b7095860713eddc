"""the report's offer columns and `anubis status`'s recent-attempts index (issue 20, item 5)

- `subscriptions.offer_kind`, `offer_campus_name`, `offer_campus_city`: the offer fields the
  conversion report groups by (`core/offer.py`), written by intake with the payload from now
  on, so that a year of the report no longer parses 600,000 JSON payloads. The columns are
  added without a default (a catalog change on PostgreSQL, no table rewrite), then filled for
  the existing rows here, in batches of `BATCH` rows walked by primary key: memory and each
  statement stay bounded whatever the table's size, and only row locks are taken (the
  services should be stopped, as for any upgrade: a row an old intake writes meanwhile would
  miss its columns). It is one transaction: a crash leaves the table as it was, and the
  upgrade starts over. Measured at 1,000,000 subscriptions in BENCHMARKS.md.
- `ix_subscriptions_integration_created` (PostgreSQL) carries the columns the report reads of a
  window (`INCLUDE`: id, status, origin, legacy status, sent and paid times, the offer
  columns): its windows are read from a ~130 MB index instead of a heap of 1.7–3.5 GB of
  payloads. Rebuilt while the
  table is locked for writes (15 s at 1,000,000 subscriptions under load).
- `ix_subscriptions_imported` (partial, `legacy_status IS NOT NULL`): `anubis status`'s count of
  imported students no longer reads every subscription (0.35–0.45 s at 1,000,000).
- `ix_subscription_events_attempts_recent` (partial, `kind = 'attempt'`, by time): `anubis
  status` counts the attempts of a recent window from this index alone instead of all of them
  (2.6 million rows at cutover size). Built while the events table is locked for writes.

Revision ID: 0012_scale_report_status
Revises: 0011_partner_breakers
Create Date: 2026-12-07 06:30:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0012_scale_report_status"
down_revision: str | None = "0011_partner_breakers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: subscriptions read and written per statement of the backfill
BATCH = 5_000
COLUMNS = ("offer_kind", "offer_campus_name", "offer_campus_city")
#: what the report reads of a window, carried by `ix_subscriptions_integration_created`
REPORT_INCLUDE = (
    "id",
    "status",
    "origin",
    "legacy_status",
    "sent_at",
    "order_updated_at",
    *COLUMNS,
)
#: characters kept of each offer value (an index entry must stay under ~2.7 kB)
LIMIT = 200

_subscriptions = sa.table(
    "subscriptions",
    sa.column("id", sa.BigInteger()),
    sa.column("payload", sa.JSON()),
    *(sa.column(name, sa.Text()) for name in COLUMNS),
)


def offer_values(order: Any) -> tuple[str | None, str | None, str | None]:
    """`core.offer.offer_columns` as it was when this migration was written (a migration does
    not follow later code): each path as `get_path` reads it, falsy → NULL, else `str`, cut
    at `LIMIT` characters."""
    offer = order.get("offer") if isinstance(order, dict) else None
    course = offer.get("course") if isinstance(offer, dict) else None
    if not isinstance(course, dict):
        return (None, None, None)
    campus = course.get("campus")
    if not isinstance(campus, dict):
        campus = {}
    kind, name, city = course.get("kind"), campus.get("name"), campus.get("city")
    return (
        str(kind)[:LIMIT] if kind else None,
        str(name)[:LIMIT] if name else None,
        str(city)[:LIMIT] if city else None,
    )


def backfill(bind: sa.Connection, batch: int = BATCH) -> int:
    """Fill the three columns of every existing subscription; the number of rows that got a
    value. Rows whose offer gives nothing keep their NULLs and are not written."""
    s = _subscriptions
    postgres = bind.dialect.name == "postgresql"
    last, filled = 0, 0
    while True:
        rows = bind.execute(
            sa.select(s.c.id, s.c.payload).where(s.c.id > last).order_by(s.c.id).limit(batch)
        ).all()
        if not rows:
            return filled
        last = rows[-1][0]
        values = [(row[0], offer_values(row[1])) for row in rows]
        values = [(sub_id, cols) for sub_id, cols in values if any(cols)]
        filled += len(values)
        if not values:
            continue
        if postgres:  # one statement per batch
            bind.execute(
                sa.text(
                    "UPDATE subscriptions AS s SET offer_kind = v.k, offer_campus_name = v.n, "
                    "offer_campus_city = v.c FROM unnest(CAST(:ids AS bigint[]), "
                    "CAST(:k AS text[]), CAST(:n AS text[]), CAST(:c AS text[])) "
                    "AS v(id, k, n, c) WHERE s.id = v.id"
                ),
                {
                    "ids": [sub_id for sub_id, _ in values],
                    "k": [cols[0] for _, cols in values],
                    "n": [cols[1] for _, cols in values],
                    "c": [cols[2] for _, cols in values],
                },
            )
        else:
            bind.execute(
                s.update()
                .where(s.c.id == sa.bindparam("_id"))
                .values({name: sa.bindparam(f"_{name}") for name in COLUMNS}),
                [
                    {"_id": sub_id, **{f"_{n}": v for n, v in zip(COLUMNS, cols, strict=True)}}
                    for sub_id, cols in values
                ],
            )


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Text(), nullable=True))
    backfill(op.get_bind())
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_subscriptions_integration_created", "subscriptions")
        op.create_index(
            "ix_subscriptions_integration_created",
            "subscriptions",
            ["integration_id", "created_at"],
            postgresql_include=list(REPORT_INCLUDE),
        )
    op.create_index(
        "ix_subscriptions_imported",
        "subscriptions",
        ["integration_id"],
        postgresql_where=sa.text("legacy_status IS NOT NULL"),
        sqlite_where=sa.text("legacy_status IS NOT NULL"),
    )
    op.create_index(
        "ix_subscription_events_attempts_recent",
        "subscription_events",
        ["created_at", "integration_id", "operation_name", "outcome"],
        postgresql_where=sa.text("kind = 'attempt'"),
        sqlite_where=sa.text("kind = 'attempt'"),
    )


def downgrade() -> None:
    op.drop_index("ix_subscription_events_attempts_recent", "subscription_events")
    op.drop_index("ix_subscriptions_imported", "subscriptions")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_subscriptions_integration_created", "subscriptions")
        op.create_index(
            "ix_subscriptions_integration_created",
            "subscriptions",
            ["integration_id", "created_at"],
        )
    with op.batch_alter_table("subscriptions") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
