"""Two processes that migrate the app DB at once take turns (issue 24): `db.migrate` holds a
PostgreSQL advisory lock, or a file lock beside a SQLite database, around Alembic."""

from __future__ import annotations

import subprocess  # nosec B404: the test starts Python itself
import sys
import time

from sqlalchemy import inspect, text

from anubis_dagster.db.migrate import downgrade, migration_lock
from anubis_dagster.db.models import Base
from anubis_dagster.db.ready import head_revision
from anubis_dagster.db.session import get_engine

#: a process that imports everything first, says so, then migrates (the lock is what it waits on)
CHILD = """
import sys
from anubis_dagster.db.migrate import upgrade
print("ready", flush=True)
upgrade(sys.argv[1])
print("done", flush=True)
"""


def start_upgrade(url: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(  # nosec B603: our own interpreter and code
        [sys.executable, "-c", CHILD, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready", child.stderr.read() if child.stderr else ""
    return child


def tables(url: str) -> set[str]:
    get_engine(url).dispose()  # a fresh look at the schema, not a pooled connection's
    return set(inspect(get_engine(url)).get_table_names())


def test_two_upgrades_at_once_take_turns_and_both_succeed(db_url: str) -> None:
    downgrade(db_url, "base")  # an empty app DB, as on a first start
    assert not set(Base.metadata.tables) & tables(db_url)
    with migration_lock(db_url):  # a migration under way elsewhere
        children = [start_upgrade(db_url), start_upgrade(db_url)]
        time.sleep(1.5)
        assert [c.poll() for c in children] == [None, None], "an upgrade did not wait"
        assert not set(Base.metadata.tables) & tables(db_url)
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert out.strip() == "done"
    assert set(Base.metadata.tables) <= tables(db_url)
    with get_engine(db_url).connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    assert [v for (v,) in versions] == [head_revision()]


def test_two_upgrades_racing_from_nothing_both_succeed(db_url: str) -> None:
    """No lock held by the test: the two processes race for it themselves."""
    downgrade(db_url, "base")
    children = [start_upgrade(db_url), start_upgrade(db_url)]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    assert set(Base.metadata.tables) <= tables(db_url)
