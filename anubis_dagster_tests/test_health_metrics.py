"""metrics/<integration>: the business numbers per integration as asset metadata (known answers
on the report's fixture, SQLite and PostgreSQL), and seed 001's anomaly alerts, at most once a
day per integration."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from anubis_dagster.alerts.webhook import Alert
from anubis_dagster.clients.probes import Level
from anubis_dagster.db.models import Integration, Subscription, SubscriptionEvent
from anubis_dagster.db.session import session_scope
from anubis_dagster.health import anomalies, metrics, service
from anubis_dagster.health.alerting import Change, CheckOutcome, changed_state
from anubis_dagster.health.assets import job_name, metrics_key
from anubis_dagster_tests.harness import QUIET, Harness
from anubis_dagster_tests.test_report import seed

TODAY = date(2026, 11, 20)


def materialize_metrics(harness: Harness, key: str) -> dict[str, object]:
    result = harness.defs.resolve_job_def(job_name(key)).execute_in_process(
        instance=harness.instance, run_config=QUIET, asset_selection=[metrics_key(key)]
    )
    (materialization,) = result.asset_materializations_for_node(f"metrics__{key}")
    return {k: v.value for k, v in materialization.metadata.items()}


def test_metrics_assets_have_the_known_answers_per_integration(anubis_env: str) -> None:
    seed(anubis_env, datetime.now(UTC))
    harness = Harness(anubis_env)
    kroton = materialize_metrics(harness, "kroton")
    assert kroton["subscriptions"] == 10
    # in the units an operator reads: percents, hours; refusals apart from failures
    assert kroton["success_rate_pct"] == 85.7  # 6 of 7: the refused student is not a failure
    assert kroton["refusal_rate_pct"] == 12.5 and kroton["refused"] == 1
    assert kroton["retry_rate_pct"] == 44.4
    assert kroton["dead_letters"] == 1
    assert kroton["paid_to_registered_p50_h"] == 0.05  # 180 s
    assert kroton["paid_to_registered_p95_h"] == 0.17  # 600 s
    assert kroton["calls_per_registration"] == 4.17  # 25 / 6
    # registered → enrolled: EaD 2 of 3, Presencial 0 of 2 (awaiting is not followed yet)
    assert kroton["conversion_ead_pct"] == 66.7
    assert kroton["conversion_presencial_pct"] == 0
    assert kroton["conversion_rate_pct"] == 40.0
    assert "| Paulista (São Paulo) | 3 | 2 | 66.7% |" in str(kroton["conversion"])
    assert kroton["volume_24h"] == 0  # the fixture's Kroton students are 25 h and 49 h old

    estacio = materialize_metrics(harness, "estacio")  # its plots never mix with Kroton's
    assert estacio["subscriptions"] == 2 and estacio["volume_24h"] == 2
    assert estacio["volume_24h_quero_bolsa"] == 2
    assert estacio["held_for_review"] == 1
    assert estacio["success_rate_pct"] == 50.0
    # nothing measured yet: said in words, never a plotted 0
    assert estacio["paid_to_registered_p50_h"] == "n/a"
    # Estácio has no status check: whether a student enrolled is never known
    assert str(estacio["conversion_rate_pct"]).startswith("n/a: estacio has no status check")
    assert not [k for k in estacio if k.startswith("conversion_") and k != "conversion_rate_pct"]
    assert "Conversion n/a" in str(estacio["conversion"])


def counts(*pairs: tuple[int, int]) -> dict[date, int]:
    """(days before TODAY, count) → the daily counts."""
    return {TODAY - timedelta(days=back): n for back, n in pairs}


def usual_week(volume: int = 100) -> list[tuple[int, int]]:
    return [(back, volume) for back in range(2, 9)]  # the 7 days before yesterday


def test_volume_band_around_the_seven_day_median() -> None:
    assert anomalies.volume_anomaly(counts(*usual_week(), (1, 100), (0, 30)), TODAY) is None
    low = anomalies.volume_anomaly(counts(*usual_week(), (1, 49)), TODAY)
    assert low is not None and low.day == TODAY - timedelta(days=1) and low.measured == 49
    assert "below the usual 50–200 a day" in low.message
    assert anomalies.volume_anomaly(counts(*usual_week(), (1, 50)), TODAY) is None  # in the band
    high = anomalies.volume_anomaly(counts(*usual_week(), (1, 100), (0, 201)), TODAY)
    assert high is not None and high.day == TODAY and "today so far" in high.message
    # too small an integration to judge: a median of 5 a day
    assert anomalies.volume_anomaly(counts(*usual_week(5), (1, 0)), TODAY) is None


def test_excessive_retries_against_their_median() -> None:
    assert anomalies.retry_anomaly(counts(*usual_week(8), (1, 16)), TODAY) is None
    found = anomalies.retry_anomaly(counts(*usual_week(8), (1, 17)), TODAY)
    assert found is not None and found.measured == 17 and "at most 16" in found.expected
    # no retries usually: more than MIN_RETRIES is news, fewer is not
    assert anomalies.retry_anomaly(counts((0, 10)), TODAY) is None
    assert anomalies.retry_anomaly(counts((0, 11)), TODAY) is not None


def test_anomaly_alerts_at_most_once_a_day_per_integration(db_url: str) -> None:
    now = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    with session_scope(db_url) as session:
        kroton = Integration(name="Kroton", type="kroton", key="kroton")
        session.add(kroton)
        session.flush()
        for back in range(1, 9):
            day = now - timedelta(days=back)
            for n in range(20 if back > 1 else 3):  # yesterday: 3 students, usually 20
                sub = Subscription(
                    integration_id=kroton.id,
                    order_id=back * 100 + n,
                    payload={},
                    status="registered",
                    created_at=day,
                )
                session.add(sub)
        for n in range(12):  # 12 retries today, none usually
            session.add(
                SubscriptionEvent(
                    integration_id=kroton.id,
                    kind="retry",
                    operation_name="register",
                    created_at=now - timedelta(minutes=n),
                )
            )
        session.flush()
        integration_id = kroton.id
    sent: list[Alert] = []

    def send(alert: Alert) -> bool:
        sent.append(alert)
        return True

    found = service.find_anomalies(db_url, integration_id, now)
    assert sorted(a.name for a in found) == ["retries", "volume"]
    assert service.alert_anomalies(db_url, "kroton", found, "run-1", now, send) == 2
    texts = [alert.text() for alert in sent]
    assert any("Anomalous volume: kroton" in t and "measured: 3" in t for t in texts)
    assert any("Excessive retries: kroton" in t and "measured: 12" in t for t in texts)
    later = now + timedelta(hours=2)
    assert service.alert_anomalies(db_url, "kroton", found, "run-2", later, send) == 0
    tomorrow = now + timedelta(days=1)
    assert service.alert_anomalies(db_url, "kroton", found[:1], "run-3", tomorrow, send) == 1
    assert len(sent) == 3


def test_thresholds_read_both_ways() -> None:
    success = metrics.THRESHOLDS["success_rate"]  # low is bad
    assert [success.level(v) for v in (0.95, 0.85, 0.79, None)] == [
        Level.OK,
        Level.WARN,
        Level.ERROR,
        Level.OK,  # nothing ended yet: nothing to judge
    ]
    assert success.describe() == "WARN below 90.0%, ERROR below 80.0%"
    backlog = metrics.THRESHOLDS["backlog_age"]
    assert backlog.level(25 * 3600) is Level.WARN and backlog.show(49 * 3600) == "49.0 h"
    assert metrics.THRESHOLDS["dead_letters"].level(51) is Level.ERROR


def test_a_check_alerts_on_each_change_only(db_url: str) -> None:
    now = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)

    def seen(level: Level, name: str = "pending") -> Change | None:
        outcome = CheckOutcome("kroton", name, level, "120", "WARN above 100", "kroton")
        with session_scope(db_url) as session:
            return changed_state(session, outcome, now)

    assert seen(Level.OK) is None  # first evaluation, healthy: nothing to say
    assert seen(Level.WARN) == Change(Level.OK)
    assert seen(Level.WARN) is None
    assert seen(Level.ERROR) == Change(Level.WARN)
    assert seen(Level.OK) == Change(Level.ERROR)  # recovered
    assert seen(Level.OK) is None
    # bad on its first evaluation: worth an alert, with nothing it changed from
    assert seen(Level.WARN, "retry_queue") == Change(None)
    assert seen(Level.WARN, "retry_queue") is None
