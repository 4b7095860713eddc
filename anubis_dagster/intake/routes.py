"""Where an order may go: the enabled integrations with their enabled filters (`Route`), read
once per run, and the order fields each route validates. Read by intake's steps and by the run,
the takeover and the tests alike, without the rest of intake."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from anubis_dagster.core.routing import filter_fields
from anubis_dagster.core.states import Status
from anubis_dagster.core.validation import INTAKE_FIELDS, UsedFields
from anubis_dagster.db.models import Integration, IntegrationFilter
from anubis_dagster.integrations.base import order_fields_for as adapter_order_fields


@dataclass(frozen=True)
class Route:
    """One enabled integration with its enabled filters, as intake needs it."""

    integration_id: int
    key: str
    initial_status: Status
    filters: tuple[tuple[int, Mapping[str, Any]], ...]
    #: orders before this point are recorded `before_go_live`, never sent (`legacy/go_live.py`);
    #: read again in each chunk's transaction (`service._with_go_live`)
    go_live_at: datetime | None = None
    #: filter id → the order fields validated for an order routed through that filter: the
    #: adapter's, the filter's (what it matched on and its `required_fields`) and intake's own
    fields: Mapping[int, UsedFields] = field(default_factory=dict, compare=False)

    def fields_of(self, filter_id: int, filter_: Mapping[str, Any]) -> UsedFields:
        found = self.fields.get(filter_id)
        return found if found is not None else route_fields(UsedFields(), filter_)


def route_fields(adapter_fields: UsedFields, filter_: Mapping[str, Any]) -> UsedFields:
    """What is validated of an order routed through `filter_` to an integration whose adapter
    reads `adapter_fields`: those, what routing read to match it, and what intake reads."""
    read, required = filter_fields(filter_)
    return INTAKE_FIELDS | adapter_fields | UsedFields.of(read=read, required=required)


def load_routes(
    session: Session,
    initial_status_for: Callable[[str], Status],
    order_fields_for: Callable[[str], UsedFields] = adapter_order_fields,
) -> list[Route]:
    routes = []
    integrations = session.scalars(
        select(Integration).where(Integration.enabled.is_(True)).order_by(Integration.id)
    )
    for integration in integrations:
        filters = session.scalars(
            select(IntegrationFilter)
            .where(
                IntegrationFilter.integration_id == integration.id,
                IntegrationFilter.enabled.is_(True),
            )
            .order_by(IntegrationFilter.position)
        )
        pairs = tuple((f.id, f.filter) for f in filters)
        adapter_fields = order_fields_for(integration.type)
        routes.append(
            Route(
                integration_id=integration.id,
                key=integration.key,
                initial_status=initial_status_for(integration.type),
                filters=pairs,
                fields={i: route_fields(adapter_fields, f) for i, f in pairs},
            )
        )
    return routes
