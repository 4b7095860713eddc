"""import_names_job: loads the IBGE names CSV into the `names` table.

# No `from __future__ import annotations`: Dagster reads op annotations at runtime.
"""

from pathlib import Path

import dagster as dg
from pydantic import Field

from anubis_dagster.reference_data.names import SAMPLE_CSV, import_names, read_names_csv
from anubis_dagster.resources import AppDatabase
from anubis_dagster.run_tags import run_tags


class NamesImportConfig(dg.Config):
    path: str = Field(default=str(SAMPLE_CSV), description="CSV with name,gender,frequency")


@dg.op
def import_ibge_names(
    context: dg.OpExecutionContext, config: NamesImportConfig, app_db: AppDatabase
) -> dg.Output[int]:
    with app_db.session() as session:
        count = import_names(session, read_names_csv(Path(config.path)))
    context.log.info(f"imported {count} name rows")
    return dg.Output(count, metadata={"rows": count})


@dg.job(
    tags=run_tags("import_names"),
    description="IBGE first-name census → names (gender inference for Kroton).",
)
def import_names_job() -> None:
    import_ibge_names()
