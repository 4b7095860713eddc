"""privacy_export and privacy_erase: data-subject requests (LGPD art. 18) from the Launchpad.

Dagster keeps a launched run's config in its run storage (and shows it in the UI), so these
jobs never take a CPF: the operator gives an order id or a subscription id of the student
(`key: "order:123"` or `"#45"`; a CPF is refused at launch, before any run exists) and the CPF
is read from the subscription, in memory. The rules are `maintenance/privacy.py`'s; a
request by CPF is `anubis privacy export|erase CPF` in a terminal.

`privacy_export` writes its file (mode 0600) in `ANUBIS_PRIVACY_EXPORT_DIR` (default
`$ANUBIS_HOME/privacy_exports`) on the machine that runs the run, named after the run (no
personal data in the name); the run metadata has its path and counts per table, never the data.
In Kubernetes that directory must be a volume the operator can reach.

# No `from __future__ import annotations`: Dagster reads op annotations at runtime.
"""

from pathlib import Path

import dagster as dg
from pydantic import Field, field_validator

from anubis_dagster.console.student import parse_launch_key
from anubis_dagster.intake.orders_source import OrdersSource
from anubis_dagster.maintenance import privacy
from anubis_dagster.resources import AppDatabase
from anubis_dagster.runtime.launchpad import checked_schema
from anubis_dagster.runtime.policies import scrub_errors
from anubis_dagster.runtime.run_tags import run_tags
from anubis_dagster.settings import get_settings


class PrivacyRequestConfig(dg.Config):
    key: str = Field(
        description="order id (order:123) or subscription id (#45) of the student. Not a CPF: "
        "Dagster stores run config (use `anubis privacy … CPF` in a terminal)"
    )

    @field_validator("key")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_launch_key(value)  # LookupKeyError (a ValueError) says what is accepted
        return value


class PrivacyEraseConfig(PrivacyRequestConfig):
    dry_run: bool = Field(default=False, description="count what would be erased; change nothing")


def export_dir() -> Path:
    settings = get_settings()
    configured = settings.anubis_privacy_export_dir
    return Path(configured) if configured else settings.home() / "privacy_exports"


@dg.op(
    config_schema=checked_schema(PrivacyRequestConfig),
    description="Everything held about the student, unmasked, to a 0600 file on the run's host.",
)
@scrub_errors
def privacy_export_op(context: dg.OpExecutionContext, app_db: AppDatabase) -> dg.Output[str]:
    config = PrivacyRequestConfig.model_validate(context.op_config)
    key = parse_launch_key(config.key)
    source = OrdersSource()
    path = export_dir() / f"privacy-export-{context.run_id}.json"
    with app_db.session() as session:
        found = privacy.find_subject(session, key, source)
        written = privacy.export(
            session, found, path, source=source, requested_via="launchpad", run_id=context.run_id
        )
    for note in found.notes:
        context.log.warning(note)
    context.log.info(f"export of {key.describe()} written to {path} (mode 0600): {written}")
    return dg.Output(
        str(path), metadata={"path": str(path), **{f"rows:{k}": v for k, v in written.items()}}
    )


@dg.op(
    config_schema=checked_schema(PrivacyEraseConfig),
    description="Anonymise the student everywhere in the app DB; never sent again.",
)
@scrub_errors
def privacy_erase_op(context: dg.OpExecutionContext, app_db: AppDatabase) -> dg.Output[int]:
    config = PrivacyEraseConfig.model_validate(context.op_config)
    key = parse_launch_key(config.key)
    with app_db.session() as session:
        found = privacy.find_subject(session, key, OrdersSource())
        erasure = privacy.erase(
            session,
            found,
            dry_run=config.dry_run,
            requested_via="launchpad",
            run_id=context.run_id,
        )
    for note in erasure.notes:
        context.log.warning(note)
    context.log.info(f"{key.describe()}: {erasure.describe()}")
    return dg.Output(
        erasure.counts.get("subscriptions", 0),
        metadata={
            "dry_run": erasure.dry_run,
            **{f"rows:{k}": v for k, v in erasure.counts.items()},
        },
    )


@dg.job(
    tags=run_tags("privacy_export"),
    description="LGPD art. 18: export everything held about a student (by order or subscription "
    "id) to a file only the operator can read.",
)
def privacy_export() -> None:
    privacy_export_op()


@dg.job(
    tags=run_tags("privacy_erase"),
    description="LGPD art. 18: erase a student (by order or subscription id) everywhere in the "
    "app DB; their orders are never sent again; an audit row without personal data.",
)
def privacy_erase() -> None:
    privacy_erase_op()
