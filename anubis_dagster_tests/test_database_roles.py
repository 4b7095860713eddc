"""The least-privilege database roles of deploy/compose/initdb.sql (issue 22, item 2), for real:
the script runs, as the postgres container's entrypoint runs it (psql as the superuser, the
passwords in the environment), on a private PostgreSQL server started for this test (roles are
global to a server, so not on the shared one); then `anubis db upgrade` runs as the owner and
each role is tried for what it may and may not do. Skipped where no `initdb`/`pg_ctl` exists."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from anubis_dagster_tests.topology import free_port

ROOT = Path(__file__).resolve().parents[1]
INIT_SQL = ROOT / "deploy" / "compose" / "initdb.sql"
PASSWORDS = {
    "APP_OWNER_DB_PASSWORD": "ownerpw1",
    "APP_DB_PASSWORD": "apppw2",
    "DAGSTER_DB_PASSWORD": "dagsterpw3",
    "ORDERS_READER_DB_PASSWORD": "readerpw4",
    "MARKETPLACE_DB_PASSWORD": "marketpw5",
}
ADMIN = "admin"

pytestmark = pytest.mark.integration


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def _as_server_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` system user."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


@pytest.fixture
def server() -> Iterator[tuple[int, Path]]:
    """A private server on a free port: (port, its socket directory)."""
    initdb, pg_ctl = _tool("initdb"), _tool("pg_ctl")
    if not initdb or not pg_ctl:  # a missing tool is not a failure (as in test_deploy.py)
        pytest.skip("initdb/pg_ctl (PostgreSQL server binaries) not installed")
    if os.geteuid() == 0 and subprocess.run(["id", "postgres"], capture_output=True).returncode:
        pytest.skip("running as root without a `postgres` user to run the server as")
    base = Path(tempfile.mkdtemp(prefix="anubis_roles_"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    port = free_port()
    try:
        subprocess.run(
            _as_server_user(
                [initdb, "-D", str(data), "-U", ADMIN, "--auth-local=trust",
                 "--auth-host=scram-sha-256", "--no-sync"]
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip
        subprocess.run(
            _as_server_user(
                [pg_ctl, "-D", str(data), "-w", "-l", str(base / "server.log"), "-o",
                 f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"]
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip
        # the admin's own password, over the socket (trusted): the roles' logins go over TCP
        _psql(base, port, ["-c", f"ALTER ROLE {ADMIN} PASSWORD 'adminpw'"])
        yield port, base
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(
                _as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(base, ignore_errors=True)


def _psql(socket_dir: Path, port: int, args: list[str], env: dict[str, str] | None = None) -> str:
    psql = _tool("psql")
    assert psql, "psql not installed"
    result = subprocess.run(
        _as_server_user(
            [psql, "-h", str(socket_dir), "-p", str(port), "-U", ADMIN, "-d", "postgres",
             "-v", "ON_ERROR_STOP=1", "--no-psqlrc", *args]
        ),
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def _url(port: int, role: str, database: str, password: str | None = None) -> str:
    if password is None:
        password = {
            "anubis_owner": PASSWORDS["APP_OWNER_DB_PASSWORD"],
            "anubis_app": PASSWORDS["APP_DB_PASSWORD"],
            "dagster": PASSWORDS["DAGSTER_DB_PASSWORD"],
            "orders_reader": PASSWORDS["ORDERS_READER_DB_PASSWORD"],
            "marketplace": PASSWORDS["MARKETPLACE_DB_PASSWORD"],
        }[role]
    return f"postgresql+psycopg://{role}:{password}@127.0.0.1:{port}/{database}"


def _run(url: str, *statements: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            return [connection.execute(text(s)).fetchall() if "SELECT" in s.upper()[:8]
                    else connection.execute(text(s)).rowcount for s in statements]  # fmt: skip
    finally:
        engine.dispose()


def _refused(url: str, statement: str) -> str:
    with pytest.raises((ProgrammingError, OperationalError)) as caught:
        _run(url, statement)
    return str(caught.value.orig)


def test_initdb_sql_gives_each_process_only_what_it_needs(server: tuple[int, Path]) -> None:
    port, socket_dir = server
    _psql(socket_dir, port, ["-f", str(INIT_SQL)], env=PASSWORDS)

    # the owner migrates the app DB (as `setup` does)
    migrate = subprocess.run(
        [str(Path(sys.executable).parent / "anubis"), "db", "upgrade"],
        env={**os.environ, "ANUBIS_DATABASE_URL": _url(port, "anubis_owner", "anubis")},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr

    # the application: rows of every table the migrations made, temp tables, no DDL
    app = _url(port, "anubis_app", "anubis")
    (version,) = _run(app, "SELECT version_num FROM alembic_version")
    assert version
    assert _run(app, "UPDATE alembic_version SET version_num = version_num") == [1]
    assert _run(app, "SELECT count(*) FROM subscriptions") == [[(0,)]]
    _run(app, "CREATE TEMP TABLE staging (i int)")
    assert "permission denied" in _refused(app, "CREATE TABLE extra (i int)")
    assert "must be owner" in _refused(app, "ALTER TABLE subscriptions ADD COLUMN x int")
    assert "permission denied" in _refused(app, "DROP TABLE subscriptions").replace(
        "must be owner", "permission denied"
    )
    # nowhere else, and only with its own password
    assert "permission denied" in _refused(_url(port, "anubis_app", "dagster"), "SELECT 1")
    assert "password authentication failed" in _refused(
        _url(port, "anubis_app", "anubis", password="wrong"), "SELECT 1"
    )

    # Dagster's role owns its database (it creates and migrates its tables), nothing else
    dagster = _url(port, "dagster", "dagster")
    _run(dagster, "CREATE TABLE runs_probe (i int)", "DROP TABLE runs_probe")
    assert "permission denied" in _refused(_url(port, "dagster", "anubis"), "SELECT 1")

    # the orders: the marketplace writes, the reader only reads
    market = _url(port, "marketplace", "orders")
    _run(market, "CREATE TABLE orders (id int primary key)", "INSERT INTO orders VALUES (1)")
    reader = _url(port, "orders_reader", "orders")
    assert _run(reader, "SELECT id FROM orders") == [[(1,)]]
    assert "permission denied" in _refused(reader, "INSERT INTO orders VALUES (2)")
    assert "permission denied" in _refused(reader, "DELETE FROM orders")
    assert "permission denied" in _refused(reader, "CREATE TABLE extra (i int)")
    assert "permission denied" in _refused(_url(port, "orders_reader", "anubis"), "SELECT 1")
