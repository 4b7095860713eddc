"""The orders source as a Dagster resource."""

from __future__ import annotations

import dagster as dg

from anubis_dagster.intake.orders_source import OrdersSource


class OrdersSourceResource(dg.ConfigurableResource):
    """Where paid orders are read from: `ANUBIS_ORDERS_DATABASE_URL` and `ANUBIS_ORDERS_TABLE`
    from the validated settings, else the embedded SQLite orders DB. No config fields: a run
    config cannot make intake read another database or table (refused at launch)."""

    def get(self) -> OrdersSource:
        return OrdersSource()
