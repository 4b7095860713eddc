"""Shadow run end to end against the Kroton and Estácio sandboxes, on SQLite and PostgreSQL:
nothing that writes at a partner leaves (the sandboxes' request logs), "would send" is recorded
masked, going live sends only the students intaken after, and the comparison with a legacy
source lists every category, masked, from the Launchpad job and the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest

from anubis_dagster.cli import main
from anubis_dagster.db.models import SubscriptionEvent
from anubis_dagster.db.session import session_scope
from anubis_dagster.legacy.records import LegacyRecord
from anubis_dagster.legacy.shadow import PAYLOAD_KEY, release_shadowed, set_shadow
from anubis_dagster.legacy.shadow_source import register_legacy_source, unregister_legacy_source
from anubis_dagster.runtime.partitions import partition_run_config
from anubis_dagster_tests.factories import ESTACIO_OFFER, fmt_cpf, make_cpf, make_order
from anubis_dagster_tests.harness import Harness, op_metadata
from anubis_dagster_tests.test_estacio_e2e import estacio  # noqa: F401  (the fixture)
from anubis_sandboxes.estacio import EstacioSandbox
from anubis_sandboxes.kroton import KrotonSandbox
from anubis_sandboxes.server import Reply, SandboxRequest
from anubis_sandboxes.webhook_sink import WebhookSink

#: endpoints that change something at the partner (every other one only reads)
WRITES = {"register", "register_v5", "consent"}
NAME = "Maria Aparecida dos Santos"


@pytest.fixture
def harness(kroton: KrotonSandbox, estacio: EstacioSandbox, anubis_env: str) -> Harness:  # noqa: F811
    return Harness(anubis_env)


def writes(sandbox: Any) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests_log() if r["endpoint"] in WRITES]


def shadow_job(harness: Harness, key: str, shadow: bool, dry_run: bool = False) -> Any:
    result = harness.defs.resolve_job_def("shadow_mode").execute_in_process(
        partition_key=key,
        instance=harness.instance,
        run_config=partition_run_config(
            "set_shadow_mode", key, {"shadow": shadow, "dry_run": dry_run}
        ),
    )
    assert result.success
    return result


def shadowed_events(harness: Harness, order_id: int) -> list[SubscriptionEvent]:
    return [
        e for e in harness.events(order_id) if e.kind == "transition" and e.status == "shadowed"
    ]


def test_shadow_sends_nothing_records_would_send_and_going_live_sends_only_new_students(
    harness: Harness,
    kroton: KrotonSandbox,
    estacio: EstacioSandbox,  # noqa: F811
    sink: WebhookSink,
    capsys: pytest.CaptureFixture[str],
) -> None:
    harness.ingest([make_order(1), make_order(2, offer=ESTACIO_OFFER)])  # pending before
    preview = shadow_job(harness, "kroton", True, dry_run=True)
    assert "1 subscriptions not sent yet" in op_metadata(preview, "set_shadow_mode")["summary"]
    shadow_job(harness, "kroton", True)
    shadow_job(harness, "kroton", True)  # again: no change, no second alert
    assert main(["shadow", "on", "estacio"]) == 0
    assert "estacio is in shadow" in capsys.readouterr().out
    assert main(["status"]) == 0
    status = capsys.readouterr().out
    assert "SHADOW: estacio" in status and "SHADOW: kroton" in status

    harness.ingest(
        [
            make_order(3),
            make_order(4, offer=ESTACIO_OFFER),
            make_order(5, cpf="11111111111"),  # invalid: refused as live would
            make_order(6),  # intaken in shadow, not worked before going live
        ]
    )
    assert harness.deliver("kroton", subscription_ids=_ids(harness, 1, 3, 5)).success
    assert harness.deliver("estacio").success
    statuses = harness.statuses()
    assert {o: statuses[o] for o in (1, 2, 3, 4, 5, 6)} == {
        1: "shadowed",
        2: "shadowed",
        3: "shadowed",
        4: "shadowed",
        5: "invalid",
        6: "to_sync",
    }
    # zero requests that write at a partner; the reads went on (token, catalog, CEP)
    assert writes(kroton) == [] and writes(estacio) == []
    assert {r["endpoint"] for r in kroton.requests_log()} == {"catalog_search"}
    assert {r["endpoint"] for r in estacio.requests_log()} == {"cep"}

    # "would send": the masked request on the event row, the raw payload for the comparison
    for order, operation in ((1, "register"), (2, "register")):
        (event,) = shadowed_events(harness, order)
        assert event.operation_name == operation
        assert event.request["method"] == "POST"
        body = event.request["body"]
        shown = str(event.request)
        assert body and make_cpf(order) not in shown and fmt_cpf(make_cpf(order)) not in shown
        assert NAME not in shown and "aluno" not in shown
        assert "would send register" in event.response["note"]
        payload = harness.subscription(order).ies_data[PAYLOAD_KEY]
        assert f"aluno{order}@example.com.br" in str(payload)  # raw, on the row (retention)
    kroton_body = shadowed_events(harness, 1)[0].request["body"]
    assert kroton_body["inscricao"]["ofertas"]["primeiraOpcao"]  # the catalog's offers
    consent = [e for e in harness.events(2) if e.kind == "transition" and e.status == "to_register"]
    assert len(consent) == 1 and "would send consent" in consent[0].response["note"]
    assert make_cpf(2) not in str(consent[0].request)
    assert harness.subscription(1).sent_at is None  # not counted as registered
    capsys.readouterr()
    assert main(["student", "1"]) == 0
    lookup = capsys.readouterr().out
    assert "shadowed" in lookup and "kroton runs in shadow since" in lookup
    assert not harness.due("kroton", check=True)  # nothing to check: nothing was sent

    # going live: only the students intaken after the switch are sent
    assert main(["shadow", "off", "estacio", "--dry-run"]) == 0
    assert "dry run: estacio would be live" in capsys.readouterr().out
    shadow_job(harness, "kroton", False)
    assert main(["shadow", "off", "estacio"]) == 0
    harness.ingest([make_order(7), make_order(8, offer=ESTACIO_OFFER)])
    harness.deliver_until_settled("kroton")
    harness.deliver_until_settled("estacio")
    statuses = harness.statuses()
    assert statuses[6] == "shadowed"  # the shadow run's student, withheld when it came due
    assert {o: statuses[o] for o in (1, 2, 3, 4)} == dict.fromkeys((1, 2, 3, 4), "shadowed")
    assert statuses[7] in ("awaiting_register", "registered")
    assert statuses[8] == "registered"
    assert [r["cpf"] for r in writes(kroton)] == [make_cpf(7)]
    assert sorted((r["endpoint"], r["cpf"]) for r in writes(estacio)) == [
        ("consent", make_cpf(8)),
        ("register", make_cpf(8)),
    ]

    # a takeover releases chosen shadow-run students: sent from their first step, once
    second, seventh = _ids(harness, 2, 7)
    with session_scope(harness.db_url) as session:
        preview = release_shadowed(session, "estacio", [second, seventh], dry_run=True)
        assert preview.released == [second]
        assert preview.skipped == [
            {"id": seventh, "reason": "not a subscription of this integration"}
        ]
        assert release_shadowed(session, "estacio", [second]).released == [second]
    assert harness.statuses()[2] == "to_sync_lgpd"  # its consent was never sent
    harness.deliver_until_settled("estacio")
    assert harness.statuses()[2] == "registered"
    assert sorted((r["endpoint"], r["cpf"]) for r in writes(estacio)) == [
        ("consent", make_cpf(2)),
        ("consent", make_cpf(8)),
        ("register", make_cpf(2)),
        ("register", make_cpf(8)),
    ]
    with session_scope(harness.db_url) as session:
        again = release_shadowed(session, "estacio", [second])
    assert again.skipped == [{"id": second, "reason": "status registered, not shadowed"}]

    alerts = [t for t in sink.received if "shadow run" in t]
    assert len(alerts) == 4, alerts
    assert "kroton: shadow run started" in alerts[0]
    assert any("estacio: shadow run ended, live" in a for a in alerts)


def test_switching_shadow_on_stops_a_run_already_going(
    harness: Harness, kroton: KrotonSandbox
) -> None:
    """The gate reads the mode right before each write: a run that started live writes nothing
    once shadow is switched on (here during its catalog search, before the registration)."""
    harness.ingest([make_order(1)])
    original = kroton.answer

    def switch_during_the_catalog_search(request: SandboxRequest) -> Reply:
        if request.path.endswith("/_search"):
            with session_scope(harness.db_url) as session:
                set_shadow(session, "kroton", True)
        return original(request)

    kroton.answer = switch_during_the_catalog_search  # type: ignore[method-assign]
    assert harness.deliver("kroton").success
    assert harness.statuses() == {1: "shadowed"}
    assert [r["endpoint"] for r in kroton.requests_log()] == ["catalog_search"]


def _ids(harness: Harness, *orders: int) -> list[int]:
    return [harness.subscription(o).id for o in orders]


class ListReader:
    def __init__(self, records: list[LegacyRecord]) -> None:
        self.records = records

    def batches(self, batch_size: int) -> Iterator[list[LegacyRecord]]:
        for start in range(0, len(self.records), batch_size):
            yield self.records[start : start + batch_size]


@pytest.fixture
def legacy_estacio() -> Iterator[list[LegacyRecord]]:
    records: list[LegacyRecord] = []
    register_legacy_source("estacio", lambda: ListReader(records))
    yield records
    unregister_legacy_source("estacio")


def test_the_comparison_from_the_launchpad_and_the_cli(
    harness: Harness,
    estacio: EstacioSandbox,  # noqa: F811
    legacy_estacio: list[LegacyRecord],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["shadow", "on", "estacio"]) == 0
    capsys.readouterr()
    harness.ingest(
        [
            make_order(1, offer=ESTACIO_OFFER),  # both sent, a field differs
            make_order(2, offer=ESTACIO_OFFER),  # only Anubis would send
            make_order(3, offer=ESTACIO_OFFER, cpf="11111111111"),  # invalid
            make_order(4),  # routed to Kroton
        ]
    )
    assert harness.deliver("estacio").success
    assert writes(estacio) == []
    sent = datetime.now(UTC)
    would_send = harness.subscription(1).ies_data[PAYLOAD_KEY]
    legacy_payload = {**would_send, "codCurso": "OTHER"}
    legacy_estacio.extend(
        [
            LegacyRecord(
                "estacio", "L1", make_cpf(1), "registered", 1, "E1", sent, (), legacy_payload
            ),
            LegacyRecord("estacio", "L3", "11111111111", "registered", 3, "E3", sent),
            LegacyRecord("estacio", "L4", make_cpf(4), "registered", 4, "E4", sent),
            LegacyRecord("estacio", "L9", make_cpf(9), "registered", 9, "E9", sent),
        ]
    )
    since = (sent - timedelta(hours=1)).isoformat()
    until = (sent + timedelta(hours=1)).isoformat()
    result = harness.defs.resolve_job_def("shadow_report").execute_in_process(
        partition_key="estacio",
        instance=harness.instance,
        run_config=partition_run_config(
            "compare_with_legacy", "estacio", {"since": since, "until": until}
        ),
    )
    assert result.success
    metadata = op_metadata(result, "compare_with_legacy")
    summary = metadata["summary"]
    assert summary["both_sent"] == 1 and summary["only_anubis_would_send"] == 1
    assert summary["only_legacy_sent"] == 3
    assert summary["only_legacy_reasons"] == {"invalid": 1, "routed elsewhere": 1, "not seen": 1}
    assert summary["fields_differing"] == {"codCurso": 1}
    assert summary["ready"] is False
    report = metadata["report"]
    for text in ("Only the legacy sent", "Only Anubis would send", "Payload differences"):
        assert text in report
    assert "routed elsewhere (to kroton)" in report
    for order in (1, 2, 3, 4, 9):
        assert make_cpf(order) not in report
    assert "11111111111" not in report and NAME not in report
    run = harness.instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags["anubis/action"] == "shadow_report"

    assert main(["shadow", "report", "estacio", "--since", since, "--until", until]) == 0
    assert capsys.readouterr().out == report
    assert main(["shadow", "report", "estacio", "--since", until, "--until", since]) == 1
    assert "since: must be before until" in capsys.readouterr().err
    assert main(["shadow", "report", "kroton"]) == 1
    assert "set ANUBIS_LEGACY_KROTON_DATABASE_URL" in capsys.readouterr().err


def test_a_bad_period_is_refused_at_launch(harness: Harness) -> None:
    with pytest.raises(dg.DagsterInvalidConfigError, match="until"):
        harness.defs.resolve_job_def("shadow_report").execute_in_process(
            partition_key="estacio",
            instance=harness.instance,
            run_config=partition_run_config(
                "compare_with_legacy", "estacio", {"until": "yesterday"}
            ),
        )
