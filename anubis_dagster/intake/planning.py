"""How the paid-orders stream is cut into intake runs. Shared by the sensor and `anubis run`.

Both plan from the intake watermark the runs *committed* in the app DB (`intake.watermark`),
never from an optimistic position of their own: a run that failed or never launched leaves its
orders to the next plan.

Orders are read in (updated_at, id) order after a cursor. Rows newer than `settle_seconds` are
left for the next tick: an order whose transaction commits a little after its `updated_at` was
stamped (a "late-arriving row") is still read, because the cursor never passes a moment whose
rows may still be in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from anubis_dagster.intake.orders_source import OrderKey, OrdersSource
from anubis_dagster.settings import get_settings


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
    Unset arguments take the settings (`ANUBIS_INTAKE_*`), read at each call."""
    settings = get_settings()
    settle = settings.anubis_intake_settle_seconds if settle_seconds is None else settle_seconds
    batch_size = batch_size or settings.anubis_intake_batch_size
    max_batches = max_batches or settings.anubis_intake_max_runs_per_tick
    horizon = (now or datetime.now(UTC)) - timedelta(seconds=settle)
    keys = source.next_keys(cursor, horizon=horizon, limit=batch_size * max_batches)
    batches = []
    after = cursor
    for start in range(0, len(keys), batch_size):
        chunk = keys[start : start + batch_size]
        batches.append(IntakeBatch(after=after, until=chunk[-1], size=len(chunk)))
        after = chunk[-1]
    return batches


def plan_run(
    source: OrdersSource,
    committed: OrderKey | None,
    *,
    now: datetime | None = None,
    settle_seconds: float | None = None,
) -> IntakeBatch | None:
    """The sensor's next intake run: every settled order after the committed watermark, up to
    `ANUBIS_INTAKE_BATCH_SIZE * ANUBIS_INTAKE_MAX_RUNS_PER_TICK`, in one run (the run commits
    it chunk by chunk), so the sensor never needs a second run while one is in flight. None:
    nothing to read."""
    batches = plan_batches(source, committed, now=now, settle_seconds=settle_seconds)
    if not batches:
        return None
    return IntakeBatch(
        after=committed, until=batches[-1].until, size=sum(batch.size for batch in batches)
    )
