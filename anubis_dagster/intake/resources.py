"""The orders source as a Dagster resource."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from anubis_dagster.intake.orders_source import OrdersSource


class OrdersSourceResource(dg.ConfigurableResource):
    """Where paid orders are read from. Empty fields = `ANUBIS_ORDERS_DATABASE_URL` /
    `ANUBIS_ORDERS_TABLE` at run time, else the embedded SQLite orders DB."""

    url: str | None = Field(default=None, description="SQLAlchemy URL; empty = from the env")
    table: str | None = Field(default=None, description="table or view name; default orders")

    def get(self) -> OrdersSource:
        return OrdersSource(self.url, self.table)
