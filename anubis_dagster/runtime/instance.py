"""Which Dagster instance the CLI records its runs in.

Dagster reads `dagster.yaml` from `DAGSTER_HOME`. When it is not set, Anubis uses
`$ANUBIS_HOME/dagster_home` with the repository's embedded `dagster.yaml` (SQLite storage), so
`anubis run` and `make ui` share one instance and runs made from the CLI show in the UI.
Production sets `DAGSTER_HOME` to a home holding `deploy/postgres/dagster.yaml`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg

from anubis_dagster.db.session import anubis_home
from anubis_dagster.settings import export_dagster_home, get_settings

EMBEDDED_CONFIG = Path(__file__).resolve().parents[1] / "dagster.yaml"


def ensure_dagster_home() -> Path:
    home = get_settings().dagster_home
    if home:
        return Path(home)
    path = anubis_home() / "dagster_home"
    path.mkdir(parents=True, exist_ok=True)
    target = path / "dagster.yaml"
    if not target.exists() and EMBEDDED_CONFIG.exists():
        shutil.copyfile(EMBEDDED_CONFIG, target)
    export_dagster_home(str(path))
    return path


def get_instance() -> dg.DagsterInstance:
    ensure_dagster_home()
    return dg.DagsterInstance.get()
