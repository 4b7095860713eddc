"""alert_on_run_failure: every failed run (intake, delivery, check…) is posted to the webhook,
saying what failed and why, so the reader knows whether to act before opening the run.

Each alert names the integration and the action (the run's `anubis/*` tags), the op that
failed, the root cause (the innermost exception's type and message, masked: no personal data,
no secret) and who launched the run; its link opens the run in the Dagster UI
(`ANUBIS_UI_URL`). A run its first op refused for want of a partition (`partitions`) did
nothing and sends nothing.

# No `from __future__ import annotations`: Dagster reads sensor annotations at runtime.
"""

import dagster as dg
from dagster._utils.error import SerializableErrorInfo

from anubis_dagster.alerts.webhook import Alert, send_alert
from anubis_dagster.core.masking import mask_text
from anubis_dagster.runtime.partitions import was_refused
from anubis_dagster.runtime.run_tags import ACTION_TAG, ALL_INTEGRATIONS, INTEGRATION_TAG

#: step failures shown per alert (a run of in-process ops rarely has more than one)
SHOWN_FAILURES = 3
CAUSE_CHARS = 400


def root_cause(error: SerializableErrorInfo) -> SerializableErrorInfo:
    """The innermost exception: the one raised by our code or a library, not Dagster's
    wrappers around it (`raise … from exc`, or an exception raised while handling another)."""
    seen = 0
    while seen < 20:  # a cycle cannot happen in Python's chains; a bound costs nothing
        inner = error.cause or error.context
        if inner is None:
            break
        error, seen = inner, seen + 1
    return error


def describe_error(error: SerializableErrorInfo | None) -> str:
    """`Type: message` of the root cause, masked and cut to one readable line. A Dagster
    `Failure` is our own words already (e.g. "kroton: batch stopped…"): its type is noise."""
    if error is None:
        return "no exception recorded"
    cause = root_cause(error)
    name = (cause.cls_name or "Error").rsplit(".", 1)[-1]
    message = cause.message.strip()
    # Dagster's messages start with the exception's qualified name: keep the text after it
    head, sep, rest = message.partition(": ")
    if sep and head.rsplit(".", 1)[-1] == name:
        message = rest
    message = " ".join(message.split())
    text = message if name == "Failure" else f"{name}: {message}"
    return mask_text(text)[:CAUSE_CHARS]


def launched_by(run: dg.DagsterRun) -> str:
    """Who asked for the run, from the tags Dagster and `anubis run` set."""
    tags = run.tags
    if "dagster/sensor_name" in tags:
        return f"sensor {tags['dagster/sensor_name']}"
    if "dagster/schedule_name" in tags:
        return f"schedule {tags['dagster/schedule_name']}"
    if "dagster/backfill" in tags:
        return f"backfill {tags['dagster/backfill']}"
    if run.parent_run_id:  # before the parent's own tags, which a re-execution copies
        return f"re-execution of {run.parent_run_id[:8]}"
    for key in ("anubis/trigger", "anubis/launched_by"):
        if key in tags:
            return tags[key]
    return "the Launchpad"


def failure_alert(context: dg.RunFailureSensorContext) -> Alert:
    run = context.dagster_run
    integration = run.tags.get(INTEGRATION_TAG) or run.tags.get("dagster/partition")
    integration = integration or ALL_INTEGRATIONS
    action = run.tags.get(ACTION_TAG, "?")
    lines = []
    failures = context.get_step_failure_events()
    for step_failure in failures[:SHOWN_FAILURES]:
        error = step_failure.event_specific_data.error  # type: ignore[union-attr]
        lines.append(f"op `{step_failure.step_key}`: {describe_error(error)}")
    if not failures:
        # the run failed outside any op: a resource that would not start, a dead worker…
        data = context.failure_event.event_specific_data
        error = getattr(data, "error", None)
        reason = context.failure_event.message or "the run failed"
        cause = describe_error(error) if error is not None else mask_text(reason)[:CAUSE_CHARS]
        lines.append(f"no op failed; the run did: {cause}")
    lines.append(f"integration {integration}, action {action}, launched by {launched_by(run)}")
    where = run.job_name if integration == ALL_INTEGRATIONS else f"{run.job_name} [{integration}]"
    op = f" at `{failures[0].step_key}`" if failures else ""
    return Alert(f"Run failed: {where}{op}", lines, "critical", run.run_id)


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts every failed run to ANUBIS_SLACK_WEBHOOK_URL (log only when unset): the "
    "op, the integration, the masked root cause and a link to the run.",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
    if was_refused(context.dagster_run):
        return  # refused by its first op (no partition): nothing was done, the run says why
    send_alert(failure_alert(context))
