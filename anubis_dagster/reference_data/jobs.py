"""import_names_job: loads the IBGE names CSV into the `names` table.

# No `from __future__ import annotations`: Dagster reads op annotations at runtime.
"""

from pathlib import Path

import dagster as dg
from pydantic import Field

from anubis_dagster.reference_data.names import SAMPLE_CSV, import_names, read_names_csv
from anubis_dagster.resources import AppDatabase
from anubis_dagster.runtime.policies import scrub_errors
from anubis_dagster.runtime.run_tags import run_tags
from anubis_dagster.settings import get_settings


class NamesImportConfig(dg.Config):
    path: str = Field(
        default="",
        description="CSV with name,gender,frequency: empty = ANUBIS_NAMES_CSV, else the bundled "
        "file; no other path is read",
    )


def allowed_names_csv(path: str) -> Path:
    """The file a launched import may read: the bundled CSV or `ANUBIS_NAMES_CSV`, never a
    path typed at launch (the Launchpad must not read arbitrary files of the worker)."""
    configured = get_settings().anubis_names_csv
    allowed = [SAMPLE_CSV.resolve(), *([Path(configured).resolve()] if configured else [])]
    chosen = Path(path).resolve() if path.strip() else allowed[-1]
    if chosen not in allowed:
        raise dg.Failure(
            description="the names import reads only "
            + " or ".join(str(a) for a in allowed)
            + ": set ANUBIS_NAMES_CSV to import another file",
            allow_retries=False,
        )
    return chosen


@dg.op
@scrub_errors
def import_ibge_names(
    context: dg.OpExecutionContext, config: NamesImportConfig, app_db: AppDatabase
) -> dg.Output[int]:
    path = allowed_names_csv(config.path)
    with app_db.session() as session:
        count = import_names(session, read_names_csv(path))
    context.log.info(f"imported {count} name rows")
    return dg.Output(count, metadata={"rows": count})


@dg.job(
    tags=run_tags("import_names"),
    description="IBGE first-name census → names (gender inference for Kroton).",
)
def import_names_job() -> None:
    import_ibge_names()
