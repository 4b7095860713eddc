"""The asset graph shows where a student goes: paid orders → subscriptions → each configured
university, with the jobs that move them; the specs change nothing about how the jobs run."""

from __future__ import annotations

import dagster as dg

from anubis_dagster.config.integrations import load_integrations
from anubis_dagster.definitions import build_definitions
from anubis_dagster.lineage import ORDERS_KEY, SUBSCRIPTIONS_KEY, registrations_key


def test_paid_orders_flow_to_subscriptions_and_to_each_university() -> None:
    config = load_integrations()
    graph = build_definitions(config).resolve_asset_graph()
    assert graph.get(ORDERS_KEY).parent_keys == set()
    assert graph.get(SUBSCRIPTIONS_KEY).parent_keys == {ORDERS_KEY}
    keys = [i.key for i in config.integrations]
    assert keys, "the versioned integrations file configures partners"
    assert graph.get(SUBSCRIPTIONS_KEY).child_keys == {registrations_key(k) for k in keys}
    for integration in config.integrations:
        node = graph.get(registrations_key(integration.key))
        assert not node.is_materializable  # described, never materialized from the UI
        described = node.description or ""
        assert integration.name in described
        assert "deliver_job" in described and "check_job" in described
    assert "intake_job" in (graph.get(SUBSCRIPTIONS_KEY).description or "")
    assert not graph.get(ORDERS_KEY).is_materializable


def test_the_delivery_jobs_stay_op_jobs() -> None:
    defs = build_definitions()
    for name in ("intake_job", "deliver_job", "check_job"):
        job = defs.resolve_job_def(name)
        assert not job.asset_layer.asset_graph.get_all_asset_keys(), name
        assert isinstance(job, dg.JobDefinition)
