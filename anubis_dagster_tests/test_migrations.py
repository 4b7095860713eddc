from sqlalchemy import inspect

from anubis_dagster.db.migrate import downgrade, upgrade
from anubis_dagster.db.models import Base
from anubis_dagster.db.session import get_engine


def test_migrations_create_every_table_and_go_down_and_up_again(db_url: str) -> None:
    engine = get_engine(db_url)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    downgrade(db_url, "base")
    assert not set(Base.metadata.tables) & set(inspect(engine).get_table_names())
    upgrade(db_url)
    upgrade(db_url)  # idempotent
    inspector = inspect(engine)
    assert set(Base.metadata.tables) <= set(inspector.get_table_names())
    columns = {c["name"] for c in inspector.get_columns("subscriptions")}
    assert {
        "integration_id",
        "integration_filter_id",
        "order_id",
        "origin",
        "cpf",
        "payload",
        "status",
        "sent_at",
        "checked_at",
        "scheduled_to",
        "attempts",
        "last_error",
    } <= columns
    event_columns = {c["name"] for c in inspector.get_columns("subscription_events")}
    assert {
        "subscription_id",
        "status",
        "operation_name",
        "error_message",
        "request",
        "response",
        "model",
        "dagster_run_id",
        "http_status",
        "duration_ms",
    } <= event_columns


def test_the_models_match_the_migrations(db_url: str) -> None:
    """A model change without a migration fails here (Alembic autogenerate finds nothing)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with get_engine(db_url).connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
