"""Shared fixtures: a fresh, migrated app database on SQLite and on PostgreSQL.

Tests that take `db_url` run once per backend. PostgreSQL is the real server on
127.0.0.1:5432 (or `ANUBIS_TEST_POSTGRES_URL`); each pytest-xdist worker gets its own database,
migrated once and truncated between tests. When the server is unreachable the PostgreSQL cases
are skipped locally but fail on CI (`CI=true`): a skipped PostgreSQL test must not pass CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("ANUBIS_OP_RETRY_DELAY_SECONDS", "0")  # op retries at once in tests

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from anubis_dagster import resources
from anubis_dagster.db.migrate import upgrade
from anubis_dagster.db.models import Base
from anubis_dagster.db.session import get_engine
from anubis_sandboxes.kroton import KrotonSandbox, KrotonSandboxSettings
from anubis_sandboxes.webhook_sink import WebhookSink

POSTGRES_ADMIN_URL = os.environ.get(
    "ANUBIS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = [b for b in os.environ.get("ANUBIS_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _database_name() -> str:
    """Unique per test session and xdist worker: concurrent pytest runs on one machine (or one
    server) never share, or drop, each other's database."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", f"p{os.getpid()}")[:10]
    return f"anubis_test_{run}_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}".lower()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied for each test (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("template") / "anubis.db"
    upgrade(f"sqlite:///{path}")
    get_engine(f"sqlite:///{path}").dispose()
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    admin_url = make_url(POSTGRES_ADMIN_URL)
    name = _database_name()
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except Exception as exc:  # server down or unreachable
        message = f"PostgreSQL not reachable at {admin_url.render_as_string()}: {exc}"
        if ON_CI:
            pytest.fail(message)
        pytest.skip(message)
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    get_engine(url).dispose()
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_postgres(url: str) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with get_engine(url).begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def _assert_no_open_transactions(url: str) -> None:
    """A test must not leave a session idle in a transaction: it would hold locks (and block
    the next test's TRUNCATE) exactly as it would block other runs in production."""
    import time

    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
    )
    for _ in range(20):
        with get_engine(url).connect() as connection:
            if not connection.execute(query).scalar():
                return
        time.sleep(0.1)
    pytest.fail("the test left a PostgreSQL session idle in a transaction")


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty app DB URL; the test runs once per backend."""
    resources._prepared.clear()
    if request.param == "sqlite":
        path = tmp_path / "anubis.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
        yield url
        get_engine(url).dispose()
    else:
        url = request.getfixturevalue("postgres_url")
        _truncate_postgres(url)
        yield url
        _assert_no_open_transactions(url)
    resources._prepared.clear()


@pytest.fixture
def anubis_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point every Anubis default (app DB, orders DB, homes) at this test's own places."""
    monkeypatch.setenv("ANUBIS_DATABASE_URL", db_url)
    monkeypatch.setenv("ANUBIS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ANUBIS_ORDERS_DATABASE_URL", f"sqlite:///{tmp_path / 'orders.db'}")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return db_url


@pytest.fixture
def kroton(anubis_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[KrotonSandbox]:
    """The Kroton sandbox on a free port, with Anubis's Kroton settings pointing at it, quick
    processing, 1 s timeouts, retries due at once and checks without delay."""
    sandbox = KrotonSandbox(
        KrotonSandboxSettings(processing_delay=0.2, classification_step=0.3, hang_seconds=3)
    )
    url = sandbox.start()
    for name, value in {
        "API_KROTON_BASE_URL": url,
        "API_KROTON_CLIENT_ID": "sandbox-client",
        "API_KROTON_SECRET": "sandbox-secret",
        "API_KROTON_SUBSCRIPTION": "sandbox-subscription",
        "CATALOG_KROTON_BASE_URL": url,
        "CATALOG_KROTON_API_KEY": "sandbox-catalog-key",
        "API_KROTON_TIMEOUT_SECONDS": "1",
        "CATALOG_KROTON_TIMEOUT_SECONDS": "1",
        "ANUBIS_RETRY_SCHEDULE": "0s,0s,0s,0s,0s,0s,0s,0s",
        # our side of the quota is generous in tests; tests that want 429s tighten the sandbox
        "API_KROTON_RATE_LIMIT": "1000/60",
        "CATALOG_KROTON_RATE_LIMIT": "1000/60",
        # status checks due (all but) at once: durations must be above 0, a millisecond is
        "ANUBIS_FIRST_CHECK_SECONDS": "0.001",
        "ANUBIS_CHECK_MIN_SECONDS": "0.001",
    }.items():
        monkeypatch.setenv(name, value)
    yield sandbox
    sandbox.stop()


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookSink]:
    """A local Slack-compatible webhook that Anubis's alerts go to; `.received` holds them."""
    server = WebhookSink(0)
    monkeypatch.setenv("ANUBIS_SLACK_WEBHOOK_URL", server.start())
    yield server
    server.shutdown()
    server.server_close()
