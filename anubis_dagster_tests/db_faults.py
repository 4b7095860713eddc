"""A database that refuses some orders: a trigger on `subscriptions` that raises for the given
order ids, on SQLite and PostgreSQL. A real refusal at the real statement, whatever path
(bulk or row by row) intake takes to write, so tests see what production would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text

from anubis_dagster.db.session import get_engine

TRIGGER = "anubis_test_refuse_orders"


@contextmanager
def refusing_orders(
    url: str, order_ids: list[int], message: str, table: str = "subscriptions"
) -> Iterator[None]:
    """While inside, inserting or updating a row of `table` (with an `order_id` column:
    subscriptions, intake_quarantine) for one of `order_ids` fails with `message` (no quotes
    in it)."""
    ids = ", ".join(str(int(i)) for i in order_ids)
    name = TRIGGER if table == "subscriptions" else f"{TRIGGER}_{table}"
    engine = get_engine(url)
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                text(
                    f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.order_id IN ({ids}) THEN RAISE EXCEPTION '{message}'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            connection.execute(
                text(
                    f"CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON {table} "
                    f"FOR EACH ROW EXECUTE FUNCTION {name}()"
                )
            )
        else:
            for when in ("INSERT", "UPDATE"):
                connection.execute(
                    text(
                        f"CREATE TRIGGER {name}_{when.lower()} BEFORE {when} ON {table} "
                        f"WHEN NEW.order_id IN ({ids}) BEGIN SELECT RAISE(ABORT, '{message}'); END"
                    )
                )
    try:
        yield
    finally:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(text(f"DROP TRIGGER IF EXISTS {name} ON {table}"))
                connection.execute(text(f"DROP FUNCTION IF EXISTS {name}()"))
            else:
                for when in ("insert", "update"):
                    connection.execute(text(f"DROP TRIGGER IF EXISTS {name}_{when}"))
