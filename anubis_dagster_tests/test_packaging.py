"""The wheel built from the repository ships the product only (issue 22, item 7)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_excludes_the_tests_and_keeps_migrations_and_data(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("anubis_dagster-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {
        "anubis_dagster",
        f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info",
    }
    assert not [n for n in names if "anubis_dagster_tests" in n or "anubis_sandboxes" in n]
    assert "anubis_dagster/db/migrations/versions/0001_initial_schema.py" in names
    assert "anubis_dagster/reference_data/data/ibge_names.csv" in names
    assert "anubis_dagster/config/integrations.yaml" in names
