"""The health rules an operator reads (issue 23), on the plain modules: partners' refusals
measured apart from failures, with their own thresholds; descriptions in plain words (where a
threshold comes from, never a seed's name); no "was OK" on a first evaluation; alert links that
open the failing check; metrics in percents and hours, and n/a where a figure cannot exist."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import dagster as dg
import pytest

from anubis_dagster.alerts.webhook import Alert
from anubis_dagster.clients.probes import Level
from anubis_dagster.console.report import IntegrationReport
from anubis_dagster.health import metrics, service
from anubis_dagster.health.alerting import Change, CheckOutcome, change_alert
from anubis_dagster.health.first_evaluation import never_evaluated

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def report(**statuses: int) -> IntegrationReport:
    return IntegrationReport("estacio", NOW, sum(statuses.values()), Counter(statuses))


def test_refusals_are_measured_apart_from_failures() -> None:
    # the demo's Estácio: 17 accepted, 5 refused by the partner, 1 held for review
    r = report(registered=17, register_failed=4, empty_course=1, unknown=1, to_register=11)
    assert r.refused == 5
    assert r.success_rate == pytest.approx(17 / 18)  # refusals are not failures
    assert r.refusal_rate == pytest.approx(5 / 23)  # of every student whose delivery ended
    assert metrics.THRESHOLDS["success_rate"].level(r.success_rate) is Level.OK
    assert metrics.THRESHOLDS["refusal_rate"].level(r.refusal_rate) is Level.OK
    # only refusals: the integration never failed, the partner said no to everyone
    refused_only = report(registered=2, register_failed=8)
    assert refused_only.success_rate == 1.0
    assert metrics.THRESHOLDS["refusal_rate"].level(refused_only.refusal_rate) is Level.ERROR
    assert report(to_register=3).refusal_rate is None  # nothing ended yet: nothing to judge


def test_refusal_rate_has_its_own_thresholds() -> None:
    refusals = metrics.THRESHOLDS["refusal_rate"]
    assert [refusals.level(v) for v in (0.10, 0.25, 0.30, 0.50, 0.51, None)] == [
        Level.OK,
        Level.OK,  # at the limit: not above it
        Level.WARN,
        Level.WARN,
        Level.ERROR,
        Level.OK,
    ]
    assert refusals.describe() == "WARN above 25.0%, ERROR above 50.0%"
    assert "refusal_rate" in metrics.MEANINGS


def test_error_rate_counts_no_refusal() -> None:
    assert {"refused", "http_4xx"} <= set(metrics.NOT_ERRORS)


@pytest.mark.parametrize("metric", sorted(metrics.THRESHOLDS))
def test_descriptions_say_in_plain_words_where_a_threshold_comes_from(metric: str) -> None:
    description = service.threshold_description("kroton", metric)
    assert description.startswith("kroton: ")
    assert "seed" not in description.lower()
    assert metrics.THRESHOLDS[metric].describe() in description
    source = metrics.THRESHOLDS[metric].source
    assert source.startswith(("From ", "Our choice")) and source.endswith("."), source


def outcome(level: Level, name: str = "refusal_rate") -> CheckOutcome:
    return CheckOutcome(
        "estacio", name, level, "30.0%", "WARN above 25.0%, ERROR above 50.0%", "estacio"
    )


def test_a_first_evaluation_is_not_a_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANUBIS_UI_URL", "http://dagster.example")
    first = change_alert(outcome(Level.WARN), Change(None), "run-1").text()
    assert "Health WARN: estacio · refusal_rate (first evaluation)" in first
    assert "first evaluation, no earlier state" in first
    assert "was OK" not in first
    # the link opens the check's page (its history), not the health run that found it
    link = "http://dagster.example/assets/health/estacio?view=checks&checkDetail=refusal_rate"
    assert f"<{link}|Open the check in Dagster>" in first
    assert "/runs/" not in first
    changed = change_alert(outcome(Level.ERROR), Change(Level.WARN), "run-2").text()
    assert "Health ERROR: estacio · refusal_rate" in changed and "(was WARN)" in changed
    recovered = change_alert(outcome(Level.OK), Change(Level.ERROR), "run-3")
    assert recovered.level == "info" and "recovered" in recovered.title
    assert recovered.ui_path == "/assets/health/estacio?view=checks&checkDetail=refusal_rate"


def test_the_first_evaluation_alerts_only_when_bad(db_url: str) -> None:
    sent: list[Alert] = []

    def send(alert: Alert) -> bool:
        sent.append(alert)
        return True

    healthy, bad = outcome(Level.OK, "success_rate"), outcome(Level.WARN)
    assert service.alert_changes(db_url, [healthy, bad], "run-1", NOW, send) == 1
    assert "(first evaluation)" in sent[0].title and "refusal_rate" in sent[0].title
    assert service.alert_changes(db_url, [healthy, bad], "run-2", NOW, send) == 0


def test_metrics_in_percents_and_hours_and_na_where_nothing_exists() -> None:
    r = report(registered=3, enrolled=1, register_failed=1)
    r.latency_count, r.latency_percentiles = 4, {50: 5400.0, 95: 1430730.8366}
    values = service.business_metrics(r, {"quero_bolsa": 2}, followed=True)
    assert values["success_rate_pct"] == 100.0 and values["refusal_rate_pct"] == 20.0
    assert values["paid_to_registered_p50_h"] == 1.5
    assert values["paid_to_registered_p95_h"] == 397.43
    assert values["retry_rate_pct"] == 0.0
    assert values["calls_per_registration"] == 0.0  # no call recorded for the 4 delivered
    assert service.business_metrics(report(to_register=1), {})["calls_per_registration"] == "n/a"
    assert not [k for k in values if k.endswith("_s") or k in ("success_rate", "retry_rate")]

    unfollowed = service.business_metrics(r, {}, followed=False)
    assert unfollowed["conversion_rate_pct"] == (
        "n/a: estacio has no status check: whether a registered student enrolled is never known"
    )
    assert service.in_percent(None) == service.in_hours(None) == "n/a"


def test_the_start_up_sensor_requests_each_never_evaluated_job_once() -> None:
    jobs = {"health_kroton_job": [dg.AssetKey(["health", "kroton"])]}
    with dg.DagsterInstance.ephemeral() as instance:
        assert never_evaluated(instance, jobs) == ["health_kroton_job"]
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=dg.AssetKey(["health", "kroton"]))
        )
        assert never_evaluated(instance, jobs) == []  # evaluated: its schedule takes over
