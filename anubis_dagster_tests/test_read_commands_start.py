"""`anubis status`, `student` and `report` start without Alembic, the integrations sync and
Dagster when the app DB is at the head revision, and migrate it as before when it is not
(issue 20: that start-up was most of `anubis student`'s time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from anubis_dagster import resources
from anubis_dagster.db import ready
from anubis_dagster.db.migrate import alembic_config, downgrade
from anubis_dagster.db.session import get_engine


def test_the_head_read_from_the_files_is_alembics() -> None:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert [ready.head_revision()] == heads


def test_an_unreadable_or_forked_history_has_no_head(tmp_path: Path) -> None:
    folder = tmp_path
    head = ready.head_revision.__wrapped__  # not cached: the folder changes
    (folder / "a.py").write_text('revision = "a"\ndown_revision = None\n')
    (folder / "b.py").write_text('revision = "b"\ndown_revision = "a"\n')
    assert head(folder) == "b"
    (folder / "c.py").write_text('revision = "c"\ndown_revision = "a"\n')
    assert head(folder) is None  # two heads: Alembic decides
    (folder / "d.py").write_text('revision = "d"\ndown_revision = ("b", "c")\n')
    assert head(folder) is None


def test_at_the_head_nothing_is_migrated_or_synced(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(url: str) -> None:
        raise AssertionError("prepare_database called for a database at the head")

    monkeypatch.setattr(resources, "prepare_database", refuse)
    assert ready.current_revision(db_url) == ready.head_revision()
    ready.prepare_for_reading(db_url)


def test_a_database_behind_is_migrated_first(db_url: str) -> None:
    downgrade(db_url, "0005_integration_pause")
    assert ready.current_revision(db_url) == "0005_integration_pause"
    resources._prepared.clear()
    ready.prepare_for_reading(db_url)
    assert ready.current_revision(db_url) == ready.head_revision()
    with get_engine(db_url).connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM integrations").scalar()


def test_a_new_database_is_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new.db"
    assert ready.current_revision(url) is None
    ready.prepare_for_reading(url)
    assert ready.current_revision(url) == ready.head_revision()
    get_engine(url).dispose()


@pytest.mark.parametrize("command", [["status"], ["student", "order:1"], ["report"]])
def test_read_commands_import_neither_dagster_nor_alembic_nor_httpx(
    anubis_env: str, command: list[str]
) -> None:
    code = (
        "import sys\n"
        "from anubis_dagster.cli import main\n"
        f"main({command!r})\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('dagster', 'alembic', 'httpx'))\n"
        "assert not heavy, heavy[:5]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
