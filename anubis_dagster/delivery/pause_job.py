"""pause_integration: pause or resume one integration's sending from the Launchpad.

Pick the integration in the Partition box; `paused: true` (with a reason) pauses it,
`paused: false` resumes it. The rules are in `delivery.pause`; this op only applies them and
sends the one alert of a change.

# No `from __future__ import annotations`: Dagster reads op annotations at runtime.
"""

from collections.abc import Iterable

import dagster as dg
from pydantic import Field

from anubis_dagster.alerts.webhook import send_alert
from anubis_dagster.delivery.pause import MAX_REASON_LENGTH, pause_alert, set_paused
from anubis_dagster.resources import AppDatabase
from anubis_dagster.runtime.partitions import (
    integration_partitions,
    partition_integration,
    partitioned_schema,
    settings,
)
from anubis_dagster.runtime.policies import scrub_errors
from anubis_dagster.runtime.run_tags import ACTION_TAG, retag_run, run_tags


class PauseConfig(dg.Config):
    paused: bool = Field(
        default=True, description="true: stop sending to this integration; false: resume"
    )
    reason: str = Field(
        default="",
        max_length=MAX_REASON_LENGTH,
        description="why (shown in the alert, `anubis status` and the health asset)",
    )


def build_pause_job(integration_keys: Iterable[str]) -> dg.JobDefinition:
    keys = sorted(set(integration_keys))

    @dg.op(
        config_schema=partitioned_schema(PauseConfig, keys),
        description="Pauses or resumes the partition's integration; alerts once per change.",
    )
    @scrub_errors
    def set_pause(context: dg.OpExecutionContext, app_db: AppDatabase) -> dg.Output[bool]:
        key = partition_integration(context)  # refused: nothing done
        config = settings(PauseConfig, context.op_config)
        retag_run(context, action="pause" if config.paused else "resume")
        with app_db.session() as session:
            change = set_paused(session, key, config.paused, config.reason)
        context.log.info(change.describe())
        if change.changed:
            send_alert(pause_alert(change, context.run_id))
        return dg.Output(
            change.paused,
            metadata={
                "paused": change.paused,
                "changed": change.changed,
                "reason": change.reason or "-",
            },
        )

    @dg.job(
        config=integration_partitions(keys, "set_pause", lambda key: run_tags("pause", key)),
        tags={ACTION_TAG: "pause"},
        description="Pause (paused: true) or resume (paused: false) sending to one integration. "
        "Intake goes on; the due-work sensor and `anubis run` skip it while paused.",
    )
    def pause_integration() -> None:
        set_pause()

    return pause_integration
