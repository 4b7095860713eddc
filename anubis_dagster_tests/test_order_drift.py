"""Order-shape drift (issue 21), on both backends.

- Orders whose unused fields change type or gain keys (`utm`, `payment`, `offer.campaign`,
  `base_user.marketing_opt_in`, `offer.uuid` as a number…) are all delivered, through the real
  intake and the Kroton and Estácio sandboxes over HTTP.
- A chunk invalid for one reason raises exactly one drift alert ("order shape changed? …",
  counts, no personal data); a second chunk the same day does not. The run's metadata counts
  invalid and unrouted orders per reason.
- The rule itself (`core.drift`), without Dagster.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import select

from anubis_dagster.config.integrations import load_integrations, sync_integrations
from anubis_dagster.core.drift import Drift, DriftThresholds, find_drifts
from anubis_dagster.db.models import AlertState, Integration, Subscription
from anubis_dagster.db.session import session_scope
from anubis_dagster.health.assets import job_name, metrics_key
from anubis_dagster.intake import service
from anubis_dagster.intake.orders_source import OrderRow
from anubis_dagster.intake.planning import plan_batches
from anubis_dagster.intake.routes import load_routes
from anubis_dagster.intake.watermark import read_watermark
from anubis_dagster.integrations.base import initial_status_for
from anubis_dagster.settings import Settings, SettingsError
from anubis_dagster_tests.factories import ESTACIO_OFFER, make_cpf, make_order
from anubis_dagster_tests.harness import QUIET, Harness, op_metadata
from anubis_dagster_tests.test_estacio_e2e import estacio, estacio_offer  # noqa: F401
from anubis_sandboxes.estacio import EstacioSandbox
from anubis_sandboxes.kroton import KrotonSandbox
from anubis_sandboxes.webhook_sink import WebhookSink


def drifted(order: dict[str, Any], n: int) -> dict[str, Any]:
    """What an upstream deploy did to the order: fields nobody reads change type, new keys
    appear at every level (some holding values no column stores as they are)."""
    order["offer"]["uuid"] = 900_000 + n  # was text
    order["offer"]["campaign"] = {"name": "black friday", "tags": ["bf", 2026]}
    order["utm"] = {"source": "google", "medium": None, "campaign_id": 10**30}
    order["payment"] = {"method": "pix", "amount": "359,94", "note": "a\x00b"}
    order["base_user"]["marketing_opt_in"] = True
    order["base_user"]["id"] = f"u-{n}"  # was an integer id
    order["base_user"]["last_enem_score"] = "n/a"
    order["price"] = {"amount": 359.94, "currency": "BRL"}
    order["offer"]["course"]["campus"]["id"] = "77"
    return order


def test_orders_whose_unused_fields_drift_are_all_delivered(
    anubis_env: str,
    kroton: KrotonSandbox,
    estacio: EstacioSandbox,  # noqa: F811
) -> None:
    harness = Harness(anubis_env)
    orders = [drifted(make_order(i), i) for i in range(1, 6)]
    orders += [drifted(make_order(i, offer=estacio_offer("GRH03")), i) for i in range(6, 11)]
    harness.ingest(orders)
    statuses = harness.statuses()
    assert statuses == {
        **dict.fromkeys(range(1, 6), "to_sync"),
        **dict.fromkeys(range(6, 11), "to_sync_lgpd"),
    }
    # the stored order keeps every field an IES reads, and the drifted ones but for what no
    # backend stores as it is (a NUL, a 31-digit number)
    stored = harness.subscription(1).payload
    assert stored["base_user"] == {**orders[0]["base_user"]}
    assert stored["utm"]["campaign_id"] is None and stored["payment"]["note"] == "a\ufffdb"
    assert stored["offer"]["uuid"] == 900_001

    assert harness.deliver("kroton").success
    assert harness.deliver("estacio").success
    statuses = harness.statuses()
    assert {statuses[i] for i in range(1, 6)} <= {"awaiting_register", "registered"}
    assert {statuses[i] for i in range(6, 11)} == {"registered"}
    registered = {**kroton.stats()["registrations_per_cpf"]}
    assert registered == {make_cpf(i): 1 for i in range(1, 6)}
    assert estacio.stats()["registrations_per_cpf"] == {make_cpf(i): 1 for i in range(6, 11)}


def ingest(harness: Harness, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The orders through `intake_job` as the sensor plans it, from the intake watermark; each
    run's op metadata."""
    harness.source.load(orders)
    job = harness.defs.resolve_job_def("intake_job")
    metadata = []
    with session_scope(harness.db_url) as session:
        cursor = read_watermark(session, harness.source.watermark_name)
    for batch in plan_batches(harness.source, cursor, settle_seconds=0):
        result = job.execute_in_process(
            run_config={**batch.run_config(), **QUIET}, instance=harness.instance
        )
        assert result.success
        metadata.append(op_metadata(result, "ingest_paid_orders"))
    return metadata


BIRTH = "base_user.birth_date must be text, not a number"
TODAY = date(2026, 11, 23)


def test_a_chunk_invalid_for_one_reason_alerts_once_a_day(
    anubis_env: str, sink: WebhookSink
) -> None:
    harness = Harness(anubis_env)
    # a deploy sends the birth date as a number (Kroton reads it): 25 of 25 refused
    orders = [make_order(i, birth_date=19980412) for i in range(1, 26)]
    [meta] = ingest(harness, orders)
    assert set(harness.statuses().values()) == {"invalid"}
    assert meta["invalid"] == 25
    assert meta["by_reason"] == {"kroton": {BIRTH: 25}}
    message = f"order shape changed? 25 of 25 orders invalid for kroton: {BIRTH}"
    assert meta["drift_alerts"] == [message]
    drift_alerts = [a for a in sink.received if "Order shape changed?" in a]
    assert len(drift_alerts) == 1
    alert = drift_alerts[0]
    assert message in alert and "100% of the chunk" in alert
    for order in orders[:3]:  # no personal data: neither the CPF nor the e-mail nor the name
        assert make_cpf(order["id"]) not in alert
        assert order["base_user"]["email"] not in alert
    assert "Maria" not in alert

    # the same drift in the next run, the same day: counted, not alerted again
    [meta] = ingest(harness, [make_order(i, birth_date=19980412) for i in range(26, 51)])
    assert meta["by_reason"] == {"kroton": {BIRTH: 25}}
    assert meta["drift_alerts"] == []
    assert len([a for a in sink.received if "Order shape changed?" in a]) == 1
    with session_scope(anubis_env) as session:
        states = session.scalars(select(AlertState).where(AlertState.scope == "kroton")).all()
        assert [s.state for s in states] == [datetime.now(UTC).date().isoformat()]

    # metrics/kroton shows the day's invalid share
    result = harness.defs.resolve_job_def(job_name("kroton")).execute_in_process(
        instance=harness.instance, run_config=QUIET, asset_selection=[metrics_key("kroton")]
    )
    (materialization,) = result.asset_materializations_for_node("metrics__kroton")
    metrics = {k: v.value for k, v in materialization.metadata.items()}
    today = datetime.now(UTC).date().isoformat()
    assert metrics["invalid_today_pct"] == 100.0  # in percent, as an operator reads it
    assert metrics["invalid_pct_by_day"] == {today: 100.0}


def test_unrouted_orders_drift_and_small_chunks_do_not(anubis_env: str, sink: WebhookSink) -> None:
    harness = Harness(anubis_env)
    # 19 orders all invalid: under the 20 orders the rule needs to judge a chunk
    [meta] = ingest(harness, [make_order(i, birth_date=19980412) for i in range(1, 20)])
    assert meta["invalid"] == 19 and meta["drift_alerts"] == []
    # a new education group no filter knows: 24 of 30 unrouted, 6 fine
    orders = []
    for i in range(100, 130):
        offer = {**ESTACIO_OFFER, "education_group_id": 99 if i < 124 else 2}
        orders.append(make_order(i, offer=offer))
    [meta] = ingest(harness, orders)
    assert meta["by_reason"] == {"unrouted": {"no integration filter matches the order": 24}}
    assert meta["drift_alerts"] == [
        "order shape changed? 24 of 30 orders unrouted: no integration filter matches the order"
    ]
    alerts = [a for a in sink.received if "Order shape changed?" in a]
    assert len(alerts) == 1
    with session_scope(anubis_env) as session:
        assert session.query(Subscription).filter(Subscription.status == "invalid").count() == 19


# --- the rule, without Dagster -----------------------------------------------------------------
RULE = DriftThresholds(min_share=0.2, min_orders=20)


def test_the_rule_needs_the_share_of_enough_orders() -> None:
    reason = ("kroton", "offer.uuid must be text, not a number")
    assert find_drifts({reason: 37}, {"kroton": 37}, {}, 37, RULE) == [
        Drift("kroton", "invalid", reason[1], 37, 37)
    ]
    assert find_drifts({reason: 4}, {"kroton": 20}, {}, 20, RULE) != []  # 20% of 20
    assert find_drifts({reason: 3}, {"kroton": 20}, {}, 20, RULE) == []  # 15%
    assert find_drifts({reason: 7}, {"kroton": 35}, {}, 35, RULE) != []  # 20%, despite floats
    assert find_drifts({reason: 19}, {"kroton": 19}, {}, 19, RULE) == []  # too few orders
    assert find_drifts({}, {}, {"no filter": 5}, 25, RULE) == [
        Drift("intake", "unrouted", "no filter", 5, 25)
    ]
    # the share is of the integration's orders, not of the whole chunk
    assert find_drifts({reason: 20}, {"kroton": 20, "estacio": 980}, {}, 1000, RULE) != []


def test_the_rule_names_the_reason_with_its_counts() -> None:
    drift = Drift("kroton", "invalid", "offer.uuid must be text, not a number", 37, 37)
    assert drift.message() == (
        "order shape changed? 37 of 37 orders invalid for kroton: "
        "offer.uuid must be text, not a number"
    )
    assert drift.key.startswith("drift:invalid:") and len(drift.key) <= 80
    other = Drift("kroton", "invalid", "base_user.rg must be text, not a list", 37, 37)
    assert other.key != drift.key


def test_the_thresholds_are_checked_at_load() -> None:
    with pytest.raises(ValueError):
        DriftThresholds(min_share=0)
    with pytest.raises(ValueError):
        DriftThresholds(min_orders=0)
    for name, value in [
        ("ANUBIS_DRIFT_MIN_SHARE", "0"),
        ("ANUBIS_DRIFT_MIN_SHARE", "1.5"),
        ("ANUBIS_DRIFT_MIN_SHARE", "nan"),
        ("ANUBIS_DRIFT_MIN_ORDERS", "0"),
    ]:
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({name: value})
        assert name in str(raised.value)
    settings = Settings.from_env({"ANUBIS_DRIFT_MIN_SHARE": "0.5", "ANUBIS_DRIFT_MIN_ORDERS": "5"})
    assert (settings.anubis_drift_min_share, settings.anubis_drift_min_orders) == (0.5, 5)


def test_an_order_routed_to_two_integrations_is_judged_by_each(db_url: str) -> None:
    """Through the real intake: Kroton's filter also takes education group 2 here, so an
    Estácio order goes to both; it lacks Kroton's unit and its RG is a list, which Estácio
    never reads: valid for Estácio, invalid for Kroton, in one chunk."""
    config = load_integrations()
    kroton_filter = config.integrations[0].filters[0].filter
    assert config.integrations[0].key == "kroton"
    kroton_filter["education_group_ids"] = [1, 2]
    kroton_filter["university_ids"] = [10, 20, 30, ESTACIO_OFFER["university_id"]]
    order = make_order(1, offer=ESTACIO_OFFER, rg=["not", "text"])
    order["offer"]["uuid"] = 42  # read by nobody
    with session_scope(db_url) as session:
        sync_integrations(session, config)
        routes = load_routes(session, initial_status_for)
        report = service.ingest(
            session, [OrderRow(1, datetime.now(UTC), order)], routes, today=TODAY, run_id="t"
        )
    assert report.decided == {"kroton": 1, "estacio": 1}
    with session_scope(db_url) as session:
        found = {
            key: (status, error)
            for key, status, error in session.execute(
                select(Integration.key, Subscription.status, Subscription.last_error).join(
                    Integration, Integration.id == Subscription.integration_id
                )
            )
        }
    assert found["estacio"] == ("to_sync_lgpd", None)
    assert found["kroton"] == (
        "invalid",
        "offer.metadata.idUnidadeOrigem - required field is missing; "
        "base_user.rg - must be text, not a list",
    )
