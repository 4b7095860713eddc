"""Where the shadow comparison reads its two sides: the legacy's records of an integration (a
`LegacyReader` built from the validated settings, never from a launched run's config) and the
orders source (to tell "not routed" from "not paid" or "never seen").

Each legacy source registers how to build its reader for an integration key
(`register_legacy_source`); the readers of the cutover (Kroton's PostgreSQL tables, the
Estácio CSV: `legacy/` readers of the import) register theirs, reading their database URL or
file from the settings. A key with no source fails the comparison naming what to configure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from sqlalchemy import select

from anubis_dagster.db.session import session_scope
from anubis_dagster.intake.orders_source import OrdersSource
from anubis_dagster.legacy.records import LegacyReader
from anubis_dagster.legacy.shadow_report import (
    OrderLookup,
    ShadowReport,
    anubis_records,
    compare,
    legacy_records,
)

#: integration key → builds that integration's legacy reader from the settings (no arguments:
#: nothing of it may come from a launched run)
LegacySourceFactory = Callable[[], LegacyReader]
_SOURCES: dict[str, LegacySourceFactory] = {}


class LegacySourceMissing(LookupError):
    pass


def register_legacy_source(key: str, factory: LegacySourceFactory) -> None:
    """Make `factory` the legacy source of integration `key` (replaces any earlier one)."""
    _SOURCES[key] = factory


def unregister_legacy_source(key: str) -> None:
    _SOURCES.pop(key, None)


def legacy_reader_for(key: str) -> LegacyReader:
    factory = _SOURCES.get(key)
    if factory is None:
        # the cutover's sources from the settings (Kroton's legacy DB, the integration's CSV)
        from anubis_dagster.legacy import operations

        try:
            return operations.reader_for(key)
        except operations.LegacySourceMissing as exc:
            raise LegacySourceMissing(str(exc)) from None
    return factory()


def orders_lookup(source: OrdersSource) -> OrderLookup:
    """order id → "paid"/"not_paid" from the orders source (absent ids: no such order)."""

    def lookup(order_ids: list[int]) -> Mapping[int, str]:
        if not order_ids or not source.exists():
            return {}
        t = source.table.c
        found: dict[int, str] = {}
        with source.engine.connect() as connection:
            for start in range(0, len(order_ids), 500):
                chunk = order_ids[start : start + 500]
                rows = connection.execute(select(t.id, t.checkout_step).where(t.id.in_(chunk)))
                for order_id, step in rows:
                    found[int(order_id)] = "paid" if step == "paid" else "not_paid"
        return found

    return lookup


def build_report(
    db_url: str,
    key: str,
    since: datetime,
    until: datetime,
    *,
    reader: LegacyReader | None = None,
    orders: OrdersSource | None = None,
) -> ShadowReport:
    """The comparison for integration `key` over [since, until): our app DB, the legacy source
    of the settings (or `reader`), the orders source of the settings (or `orders`)."""
    reader = reader or legacy_reader_for(key)
    orders = orders or OrdersSource()
    with session_scope(db_url) as session:
        return compare(
            anubis_records(session, since, until),
            legacy_records(reader),
            integration=key,
            since=since,
            until=until,
            order_lookup=orders_lookup(orders),
        )
