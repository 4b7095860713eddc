"""How the paid-orders stream is cut into intake runs. Shared by the sensor and `anubis run`.

Orders are read in (updated_at, id) order after a cursor. Rows newer than `settle_seconds` are
left for the next tick: an order whose transaction commits a little after its `updated_at` was
stamped (a "late-arriving row") is still read, because the cursor never passes a moment whose
rows may still be in flight.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from anubis_dagster.intake.orders_source import OrderKey, OrdersSource

SETTLE_SECONDS = float(os.environ.get("ANUBIS_INTAKE_SETTLE_SECONDS", "5"))
BATCH_SIZE = int(os.environ.get("ANUBIS_INTAKE_BATCH_SIZE", "1000"))
MAX_RUNS_PER_TICK = int(os.environ.get("ANUBIS_INTAKE_MAX_RUNS_PER_TICK", "5"))


@dataclass(frozen=True)
class IntakeBatch:
    after: OrderKey | None
    until: OrderKey
    size: int

    @property
    def run_key(self) -> str:
        start = f"{self.after.updated_at.isoformat()}#{self.after.id}" if self.after else "start"
        return f"intake:{start}..{self.until.updated_at.isoformat()}#{self.until.id}"

    def run_config(self) -> dict[str, object]:
        return {
            "ops": {
                "ingest_paid_orders": {
                    "config": {
                        "after": self.after.to_json() if self.after else "",
                        "until": self.until.to_json(),
                    }
                }
            }
        }


def plan_batches(
    source: OrdersSource,
    cursor: OrderKey | None,
    *,
    now: datetime | None = None,
    settle_seconds: float | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
) -> list[IntakeBatch]:
    """The next intake batches after `cursor` (empty when there is nothing settled to read).
    Unset arguments take the module settings (from the environment)."""
    settle = SETTLE_SECONDS if settle_seconds is None else settle_seconds
    batch_size = batch_size or BATCH_SIZE
    max_batches = max_batches or MAX_RUNS_PER_TICK
    horizon = (now or datetime.now(UTC)) - timedelta(seconds=settle)
    keys = source.next_keys(cursor, horizon=horizon, limit=batch_size * max_batches)
    batches = []
    after = cursor
    for start in range(0, len(keys), batch_size):
        chunk = keys[start : start + batch_size]
        batches.append(IntakeBatch(after=after, until=chunk[-1], size=len(chunk)))
        after = chunk[-1]
    return batches
