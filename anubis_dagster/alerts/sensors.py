"""alert_on_run_failure: every failed run (intake, delivery, check…) is posted to the webhook.

# No `from __future__ import annotations`: Dagster reads sensor annotations at runtime.
"""

import dagster as dg

from anubis_dagster.alerts.webhook import Alert, send_alert
from anubis_dagster.core.masking import mask_text


def failure_alert(context: dg.RunFailureSensorContext) -> Alert:
    run = context.dagster_run
    partition = run.tags.get("dagster/partition")
    where = f"{run.job_name}" + (f" [{partition}]" if partition else "")
    message = context.failure_event.message or "the run failed"
    lines = [mask_text(message)[:500]]
    for step_failure in context.get_step_failure_events()[:3]:
        error = step_failure.event_specific_data.error  # type: ignore[union-attr]
        if error is not None:
            lines.append(f"{step_failure.step_key}: {mask_text(error.message.strip())[:300]}")
    return Alert(f"Run failed: {where}", lines, "critical", run.run_id)


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts every failed run to ANUBIS_SLACK_WEBHOOK_URL (log only when unset).",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
    send_alert(failure_alert(context))
