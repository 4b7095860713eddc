"""A legacy Kroton database in seed 001's shape (`subscriptions`, `follow_ups`), for the tests
and the legacy import benchmark: a real PostgreSQL database on the PostgreSQL run, a SQLite
file of the same shape on the SQLite run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
    text,
)
from sqlalchemy.engine import make_url

metadata = MetaData()
subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("user_name", Text),
    Column("cpf", String(14)),
    Column("gender", String(2)),
    Column("birthday", String(10)),
    Column("sent_at", DateTime(timezone=True)),
    Column("last_check", DateTime(timezone=True)),
    Column("email", Text),
    Column("area_code", String(4)),
    Column("phone_number", String(20)),
    Column("address", Text),
    Column("status", String(40), nullable=False),
)
follow_ups = Table(
    "follow_ups",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("kroton_subscription_id", String(40)),
    Column("kroton_subscription_dealer_id", String(40)),
    Column("source", JSON),
    Column("subscription_id", BigInteger, nullable=False, index=True),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
)


@contextmanager
def legacy_database(app_db_url: str, tmp_path: Path, name: str = "legacy") -> Iterator[str]:
    """An empty legacy Kroton database on the app DB's backend; yields its URL."""
    if app_db_url.startswith("postgresql"):
        admin_url = make_url(app_db_url).set(database="postgres")
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        database = f"anubis_{name}_{os.getpid()}_{worker}".lower()
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{database}"'))
        url = admin_url.set(database=database).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tmp_path / f'{name}.db'}"
        admin = None
    engine = create_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    try:
        yield url
    finally:
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            admin.dispose()


def add_students(url: str, rows: list[dict[str, Any]]) -> None:
    """Rows: id, cpf, status, sent_at, and optionally partner_id (a follow-up) and source."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            insert(subscriptions),
            [
                {
                    "id": r["id"],
                    "user_name": "Maria Aparecida dos Santos",
                    "cpf": r["cpf"],
                    "status": r["status"],
                    "sent_at": r.get("sent_at"),
                    "email": f"legacy{r['id']}@example.com.br",
                }
                for r in rows
            ],
        )
        follow = [r for r in rows if r.get("partner_id")]
        if follow:
            connection.execute(
                insert(follow_ups),
                [
                    {
                        "kroton_subscription_id": r["partner_id"],
                        "kroton_subscription_dealer_id": "DL1",
                        "source": r.get("source") or {"status": "SUCCESS", "id": r["partner_id"]},
                        "subscription_id": r["id"],
                        "created_at": r.get("sent_at"),
                        "updated_at": r.get("sent_at"),
                    }
                    for r in follow
                ],
            )
    engine.dispose()


def set_status(url: str, legacy_id: int, status: str, when: datetime | None = None) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            subscriptions.update()
            .where(subscriptions.c.id == legacy_id)
            .values(status=status, last_check=when)
        )
    engine.dispose()
