"""The Anubis code location: every job, sensor and resource Dagster loads."""

from __future__ import annotations

import dagster as dg

from anubis_dagster.intake.jobs import intake_job
from anubis_dagster.intake.resources import OrdersSourceResource
from anubis_dagster.intake.sensors import paid_orders_sensor
from anubis_dagster.resources import AppDatabase

defs = dg.Definitions(
    jobs=[intake_job],
    sensors=[paid_orders_sensor],
    resources={"app_db": AppDatabase(), "orders": OrdersSourceResource()},
)
