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
def refusing_orders(url: str, order_ids: list[int], message: str) -> Iterator[None]:
    """While inside, inserting or updating a subscription of one of `order_ids` fails with
    `message` (no quotes in it)."""
    ids = ", ".join(str(int(i)) for i in order_ids)
    engine = get_engine(url)
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                text(
                    f"CREATE OR REPLACE FUNCTION {TRIGGER}() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.order_id IN ({ids}) THEN RAISE EXCEPTION '{message}'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            connection.execute(
                text(
                    f"CREATE TRIGGER {TRIGGER} BEFORE INSERT OR UPDATE ON subscriptions "
                    f"FOR EACH ROW EXECUTE FUNCTION {TRIGGER}()"
                )
            )
        else:
            for when in ("INSERT", "UPDATE"):
                connection.execute(
                    text(
                        f"CREATE TRIGGER {TRIGGER}_{when.lower()} BEFORE {when} ON subscriptions "
                        f"WHEN NEW.order_id IN ({ids}) BEGIN SELECT RAISE(ABORT, '{message}'); END"
                    )
                )
    try:
        yield
    finally:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(text(f"DROP TRIGGER IF EXISTS {TRIGGER} ON subscriptions"))
                connection.execute(text(f"DROP FUNCTION IF EXISTS {TRIGGER}()"))
            else:
                for when in ("insert", "update"):
                    connection.execute(text(f"DROP TRIGGER IF EXISTS {TRIGGER}_{when}"))
