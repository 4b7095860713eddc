"""The data Anubis moves, as asset specs, so the UI's asset graph shows where a student goes:
paid orders → subscriptions → each university's registrations, and which jobs move them.

Why specs and not assets: the work itself stays in the op jobs (sensors, leases, per-student
outcomes, partitions by integration); these specs only describe the tables and the partners'
side, for lineage. None of them is materialized from the UI.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from anubis_dagster.config.integrations import IntegrationConfig

GROUP = "lineage"
ORDERS_KEY = dg.AssetKey("paid_orders")
SUBSCRIPTIONS_KEY = dg.AssetKey("subscriptions")


def registrations_key(integration: str) -> dg.AssetKey:
    return dg.AssetKey(["registrations", integration])


def lineage_specs(
    integrations: Iterable[IntegrationConfig], orders_table: str
) -> list[dg.AssetSpec]:
    """The orders source (external: the marketplaces own it), the subscriptions table, and
    one registrations spec per configured integration."""
    specs = [
        dg.AssetSpec(
            ORDERS_KEY,
            group_name=GROUP,
            description="Paid orders of the marketplaces (Quero Bolsa, Ead.com, Guia da "
            "Carreira, Mundo Vestibular): the orders source, read by `paid_orders_sensor`, "
            "never written by Anubis.",
            kinds={"sql"},
            metadata={"table": orders_table, "read_by": "paid_orders_sensor → intake_job"},
        ),
        dg.AssetSpec(
            SUBSCRIPTIONS_KEY,
            deps=[ORDERS_KEY],
            group_name=GROUP,
            description="One subscription per (integration, order): written by `intake_job` "
            "(validated and routed by the integrations' filters; invalid orders become "
            "`invalid` subscriptions with their reasons), moved on by `deliver_job` and "
            "`check_job` through the state machine. App DB table `subscriptions`.",
            kinds={"sql"},
            metadata={"table": "subscriptions", "written_by": "intake_job"},
        ),
    ]
    for integration in integrations:
        jobs = [f"deliver_job[{integration.key}]", f"check_job[{integration.key}]"]
        specs.append(
            dg.AssetSpec(
                registrations_key(integration.key),
                deps=[SUBSCRIPTIONS_KEY],
                group_name=GROUP,
                description=f"Students registered at {integration.name} through its "
                f"enrolment API (integration `{integration.key}`, type `{integration.type}`): "
                "sent by `deliver_job` and followed by `check_job` (partition "
                f"`{integration.key}`).",
                metadata={"integration": integration.key, "moved_by": ", ".join(jobs)},
            )
        )
    return specs
