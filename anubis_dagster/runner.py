"""`anubis run`: one full pass, in process, of what the sensors would ask for now.

For operators and scripts that do not run the Dagster daemon. Runs are executed with
`execute_in_process` on the configured instance, so they show in the UI like any other.
The intake watermark of this command is its own (`cursors` table, name `anubis_run/paid_orders`)
and independent of the sensor's cursor: if both are used, orders are read twice and ingested
once (intake is idempotent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from anubis_dagster.db.models import Cursor
from anubis_dagster.intake.orders_source import OrderKey, OrdersSource
from anubis_dagster.intake.planning import SETTLE_SECONDS, plan_batches
from anubis_dagster.resources import AppDatabase

INTAKE_CURSOR = "anubis_run/paid_orders"


@dataclass
class PassResult:
    runs: list[tuple[str, str, bool]] = field(default_factory=list)  # (job, run id, success)

    @property
    def failed(self) -> list[tuple[str, str, bool]]:
        return [r for r in self.runs if not r[2]]


def _read_cursor(app_db: AppDatabase, name: str) -> str | None:
    with app_db.session() as session:
        row = session.get(Cursor, name)
        return row.value if row else None


def _write_cursor(app_db: AppDatabase, name: str, value: str) -> None:
    with app_db.session() as session:
        row = session.get(Cursor, name) or Cursor(name=name, value=value)
        row.value = value
        session.add(row)


def run_pass(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    *,
    settle_seconds: float = SETTLE_SECONDS,
    echo: Callable[[str], None] = print,
) -> PassResult:
    result = PassResult()
    app_db = AppDatabase()
    source = OrdersSource()
    source.ensure_table()  # an empty embedded source is not an error

    intake = defs.resolve_job_def("intake_job")
    cursor = OrderKey.from_json(_read_cursor(app_db, INTAKE_CURSOR))
    while batches := plan_batches(source, cursor, settle_seconds=settle_seconds):
        for batch in batches:
            outcome = intake.execute_in_process(
                run_config=batch.run_config(),
                instance=instance,
                tags={"anubis/job": "intake", "anubis/trigger": "anubis run"},
                raise_on_error=False,
            )
            result.runs.append(("intake_job", outcome.run_id, outcome.success))
            echo(
                f"intake_job {outcome.run_id[:8]}: {batch.size} orders, "
                f"{'ok' if outcome.success else 'FAILED'}"
            )
            if not outcome.success:
                return result  # the watermark stays before the failed batch
            cursor = batch.until
            _write_cursor(app_db, INTAKE_CURSOR, cursor.to_json())
    if not result.runs:
        echo("intake: no new paid orders")
    return result
