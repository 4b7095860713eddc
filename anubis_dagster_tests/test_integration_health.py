"""The integration_health asset and its threshold checks."""

from __future__ import annotations

import dagster as dg
import pytest

from anubis_dagster.health import metrics
from anubis_dagster_tests.factories import make_order
from anubis_dagster_tests.harness import Harness
from anubis_sandboxes.kroton import KrotonSandbox


def test_health_counts_queues_dead_letters_and_errors(
    kroton: KrotonSandbox, anubis_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = Harness(anubis_env)
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "0s")
    kroton.configure(error_rate=1.0)
    harness.ingest([make_order(i) for i in range(1, 4)])
    harness.deliver_until_settled()  # three dead letters
    monkeypatch.setitem(metrics.THRESHOLDS, "dead_letter", (1, 2))

    job = harness.defs.resolve_job_def("integration_health_job")
    result = job.execute_in_process(partition_key="kroton", instance=dg.DagsterInstance.ephemeral())
    assert result.success
    (materialization,) = result.asset_materializations_for_node("integration_health")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["dead_letter"] == 3
    assert meta["pending"] == 0 and meta["retry_queue"] == 0
    assert meta["error_rate_24h"] == 1.0
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["dead_letter"].passed
    assert checks["dead_letter"].severity == dg.AssetCheckSeverity.ERROR
    assert not checks["error_rate_24h"].passed
    assert checks["pending"].passed
