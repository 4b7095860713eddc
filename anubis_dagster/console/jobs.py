"""student_lookup: "find a student" from the Launchpad; the run page shows the report.

# No `from __future__ import annotations`: Dagster reads op annotations at runtime.
"""

import dagster as dg
from pydantic import Field

from anubis_dagster.alerts.webhook import run_url
from anubis_dagster.console.student import LookupKeyError, find_student, parse_key, render_markdown
from anubis_dagster.resources import AppDatabase


class StudentLookupConfig(dg.Config):
    key: str = Field(
        description="order id, subscription id (#45) or CPF (529.982.247-25); prefix order:, "
        "subscription: or cpf: to say which"
    )


@dg.op(description="Every subscription of a student, with its attempts, as markdown metadata.")
def find_student_op(
    context: dg.OpExecutionContext, config: StudentLookupConfig, app_db: AppDatabase
) -> dg.Output[int]:
    try:
        key = parse_key(config.key)
    except LookupKeyError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    with app_db.session() as session:
        views = find_student(session, key)
    context.log.info(f"{len(views)} subscription(s) found for {key.describe()}")
    return dg.Output(
        len(views),
        metadata={
            "report": dg.MetadataValue.md(render_markdown(key, views, run_url)),
            "subscriptions": len(views),
            "statuses": dg.MetadataValue.json({v.integration: v.status for v in views}),
        },
    )


@dg.job(
    tags={"anubis/action": "lookup"},
    description="Find a student by order id, subscription id or CPF: status and why, every "
    "attempt, the next try and the dead-letter reason, per integration (personal data masked).",
)
def student_lookup() -> None:
    find_student_op()
