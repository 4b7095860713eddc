"""student_lookup: "find a student" from the Launchpad; the run page shows the report.

# No `from __future__ import annotations`: Dagster reads op annotations at runtime.
"""

import dagster as dg
from pydantic import Field, field_validator

from anubis_dagster.alerts.webhook import run_url
from anubis_dagster.console.attention import needs_attention, render_attention_markdown
from anubis_dagster.console.student import (
    find_student,
    parse_key,
    parse_launch_key,
    render_markdown,
)
from anubis_dagster.resources import AppDatabase
from anubis_dagster.runtime.launchpad import checked_schema
from anubis_dagster.runtime.policies import scrub_errors
from anubis_dagster.runtime.run_tags import run_tags


class StudentLookupConfig(dg.Config):
    key: str = Field(
        default="",
        description="order id or subscription id (#45); prefix order: or subscription: to say "
        "which. Not a CPF: Dagster stores run config (use `anubis student CPF` in a terminal)",
    )
    needs_attention: bool = Field(
        default=False,
        description="instead of one student: every student dead-lettered, refused, held for "
        "review or waiting over 24 h, with the reason (leave key empty)",
    )
    integration: str = Field(default="", description="with needs_attention: this one only")

    @field_validator("key")
    @classmethod
    def _parses(cls, value: str) -> str:
        if value.strip():  # empty: the needs-attention list (the op refuses it otherwise)
            parse_launch_key(value)  # LookupKeyError (a ValueError) says what a key looks like
        return value


@dg.op(
    config_schema=checked_schema(StudentLookupConfig),
    description="Every subscription of a student, with its attempts, as markdown metadata.",
)
@scrub_errors
def find_student_op(context: dg.OpExecutionContext, app_db: AppDatabase) -> dg.Output[int]:
    config = StudentLookupConfig.model_validate(context.op_config)
    if config.needs_attention:
        with app_db.session() as session:
            found = needs_attention(session, integration=config.integration.strip() or None)
        context.log.info(f"{found.total} students need attention")
        return dg.Output(
            found.total,
            metadata={
                "report": dg.MetadataValue.md(render_attention_markdown(found)),
                "students": found.total,
            },
        )
    if not config.key.strip():
        raise dg.Failure("give a key (an order id or #45), or set needs_attention: true")
    key = parse_key(config.key)
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
    tags=run_tags("lookup"),
    description="Find a student by order id or subscription id (a CPF: `anubis student` in a "
    "terminal, so that no CPF is kept in run storage): status and why, every "
    "attempt, the next try and the dead-letter reason, per integration (personal data masked).",
)
def student_lookup() -> None:
    find_student_op()
