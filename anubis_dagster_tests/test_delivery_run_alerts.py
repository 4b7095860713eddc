"""What a delivery run says when it ends (`alerts/delivery_runs.py`), from its step reports:
plain data in, alerts out, no Dagster. A partner's refusal is its answer, not a failure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from anubis_dagster.alerts.delivery_runs import run_alerts


def _register_step(*, registered: int = 0, failed: int = 0, refused: int = 0) -> dict[str, Any]:
    return {
        "step": "register",
        "processed": registered + failed + refused,
        "outcomes": {"register_failed": refused} if refused else {},
        "dead_lettered": [],
        "held_for_review": [],
        "registered": registered,
        "failed": failed,
        "refused": refused,
        "examples": ["#7: offer not found (MS004)"] if failed else [],
        "stats": {"calls": registered + failed + refused},
        "stopped": None,
    }


def _alerts(report: dict[str, Any], summaries: bool) -> list[Any]:
    return run_alerts(
        job="deliver_job",
        integration="estacio",
        run_id="r1",
        started_at=datetime.now(UTC),
        reports=[report],
        summaries=summaries,
    )


def test_a_run_whose_students_were_all_refused_raises_no_warning() -> None:
    assert _alerts(_register_step(refused=2), summaries=False) == []
    (summary,) = _alerts(_register_step(refused=2), summaries=True)
    assert summary.level == "info"
    assert "0 registered, 0 failed, 2 refused by the partner" in summary.lines


def test_a_run_whose_students_all_failed_still_warns() -> None:
    (warning,) = _alerts(_register_step(failed=2, refused=1), summaries=False)
    assert warning.level == "warning"
    assert "no registration succeeded, 2 failed" in warning.title
    assert "0 registered, 2 failed, 1 refused by the partner" in warning.lines
