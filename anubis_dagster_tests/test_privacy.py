"""Data-subject requests (issue 22, item 6; LGPD art. 18): export and erase a student, on SQLite
and PostgreSQL, after real deliveries through the Kroton sandbox. After an erase no CPF, name,
e-mail or phone of the student remains anywhere in the app DB (every text and JSON column of
every table is scanned), other students are untouched, and a re-ingest of the same orders
sends nobody again. The export is a 0600 file. The Launchpad jobs never take a CPF."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import JSON, String, Text, cast, func, select

from anubis_dagster.cli import main
from anubis_dagster.console.student import parse_key
from anubis_dagster.db.models import (
    Base,
    FollowUp,
    IntakeQuarantine,
    PrivacyRequest,
    Subscription,
    SubscriptionEvent,
    utcnow,
)
from anubis_dagster.db.session import session_scope
from anubis_dagster.intake.orders_source import OrdersSource
from anubis_dagster.maintenance import privacy
from anubis_dagster_tests.factories import ESTACIO_OFFER, fmt_cpf, make_cpf, make_order
from anubis_dagster_tests.harness import Harness, op_metadata
from anubis_sandboxes.kroton import KrotonSandbox

CPF = make_cpf(101)
NAME = "Josefina Quiteria Barbosa"
EMAIL = "josefina.b@example.org"
PHONE = "(21) 98877-6655"
#: what must not survive an erase, wherever it was written
TRACES = (CPF, fmt_cpf(CPF), "Josefina", "Barbosa", EMAIL, "98877-6655", "988776655")
OTHER_CPF = make_cpf(3)
KEY = "privacy-test-key"


def _orders(updated_at_shift: timedelta = timedelta(0)) -> list[dict]:
    student = {"cpf": CPF, "full_name": NAME, "email": EMAIL, "phone_number": PHONE}
    orders = [
        make_order(1, **student),
        make_order(2, offer=ESTACIO_OFFER, **student),  # the same student at Estácio
        make_order(3),  # somebody else (Maria), same course
    ]
    for order in orders:
        stamp = order["updated_at"]
        if updated_at_shift:
            from anubis_dagster.intake.orders_source import parse_timestamp

            order["updated_at"] = (parse_timestamp(stamp) + updated_at_shift).isoformat()
    return orders


def _quarantined_order() -> dict:
    return make_order(4, cpf=CPF, full_name=NAME, email=EMAIL, phone_number=PHONE)


@pytest.fixture
def world(kroton: KrotonSandbox, anubis_env: str, monkeypatch: pytest.MonkeyPatch) -> Harness:
    """The student registered at Kroton and waiting at Estácio, Maria registered at Kroton, and
    the student's personal data also where masking has gaps: a partner's error text, the
    follow-up, `last_error`, and a quarantined order (4) that never became a subscription."""
    monkeypatch.setenv("ANUBIS_PRIVACY_KEY", KEY)
    harness = Harness(anubis_env)
    harness.ingest(_orders())
    assert harness.deliver().success
    assert harness.subscription(1).status in ("registered", "awaiting_register")
    harness.source.load([_quarantined_order()])  # in the source, refused by the database once
    with session_scope(anubis_env) as session:
        mine = harness_sub(session, 1)
        mine.last_error = f"partner said: aluno {NAME} ({PHONE}) already exists"
        session.add(
            SubscriptionEvent(
                subscription_id=mine.id,
                integration_id=mine.integration_id,
                kind="attempt",
                operation_name="check",
                error_message=f"{{'nome': '{NAME}', 'email': '{EMAIL}'}}",
                response={"aluno": NAME, "cpf": CPF, "telefone": PHONE},
            )
        )
        follow_up = session.scalars(
            select(FollowUp).where(FollowUp.subscription_id == mine.id)
        ).first() or FollowUp(subscription_id=mine.id, external_id="INSC-1")
        follow_up.source = {"nome": NAME, "email": EMAIL, "situacao": "Inscrito"}
        session.add(follow_up)
        session.add(
            IntakeQuarantine(
                order_id=4,
                integration_key="kroton",
                kind="write_failed",
                reason=f"value too long for {NAME}",
            )
        )
    return harness


def harness_sub(session, order_id: int, key: str = "kroton") -> Subscription:  # type: ignore[no-untyped-def]
    from anubis_dagster.db.models import Integration

    return session.scalars(
        select(Subscription)
        .join(Integration)
        .where(Subscription.order_id == order_id, Integration.key == key)
    ).one()


def text_values(url: str) -> Iterator[tuple[str, str, str]]:
    """(table, column, text) of every text and JSON value in the app DB."""
    with session_scope(url) as session:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, (String, Text, JSON))]
            if not columns:
                continue
            for row in session.execute(select(*[cast(c, Text) for c in columns])):
                for column, value in zip(columns, row, strict=True):
                    if value is not None:
                        yield table.name, column.name, value


def traces(url: str, needles: tuple[str, ...]) -> list[tuple[str, str, str]]:
    return [
        (table, column, needle)
        for table, column, value in text_values(url)
        for needle in needles
        if needle.lower() in value.lower()
    ]


def _find(url: str, key: str) -> privacy.Found:
    with session_scope(url) as session:
        return privacy.find_subject(session, parse_key(key), OrdersSource())


def test_erase_leaves_no_trace_and_the_student_is_never_sent_again(
    world: Harness, kroton: KrotonSandbox
) -> None:
    url = world.db_url
    assert traces(url, TRACES)  # the scan sees the student before
    with session_scope(url) as session:
        maria = harness_sub(session, 3)
        maria_before = (maria.cpf, maria.status, dict(maria.payload))
        maria_events = session.scalar(
            select(func.count())
            .select_from(SubscriptionEvent)
            .where(SubscriptionEvent.subscription_id == maria.id)
        )

    found = _find(url, fmt_cpf(CPF))
    assert found.subject.order_ids == (1, 2, 4)  # order 4 found through the quarantine
    assert len(found.subject.subscription_ids) == 2

    with session_scope(url) as session:  # a dry run counts and changes nothing
        preview = privacy.erase(session, found, dry_run=True)
    assert preview.counts["subscriptions"] == 2 and preview.counts["tombstones"] == 1
    assert preview.counts["subscription_events"] > 0 and preview.counts["follow_ups"] == 1
    assert preview.counts["intake_quarantine"] == 1
    assert traces(url, TRACES)

    with session_scope(url) as session:
        erasure = privacy.erase(session, found)
    assert erasure.counts == preview.counts
    assert traces(url, TRACES) == []
    with session_scope(url) as session:
        statuses = session.execute(
            select(Subscription.order_id, Subscription.status).where(
                Subscription.order_id.in_([1, 2, 4])
            )
        ).all()
        assert sorted(statuses) == [(1, "erased"), (2, "erased"), (4, "erased")]
        (audit,) = session.scalars(select(PrivacyRequest)).all()
        expected = hmac.new(KEY.encode(), CPF.encode(), hashlib.sha256).hexdigest()
        assert (audit.kind, audit.subject_hash, audit.counts) == ("erase", expected, erasure.counts)
        # Maria untouched
        maria = harness_sub(session, 3)
        assert (maria.cpf, maria.status, maria.payload) == maria_before
        assert maria_events == session.scalar(
            select(func.count())
            .select_from(SubscriptionEvent)
            .where(SubscriptionEvent.subscription_id == maria.id)
        )
    assert traces(url, (OTHER_CPF, "Maria Aparecida"))

    # the same orders come again, even corrected at the source: nobody is sent
    seen = max((r["seq"] for r in kroton.requests_log()), default=0)
    world.ingest([*_orders(timedelta(hours=1)), _quarantined_order()])
    world.deliver()
    assert all(r["cpf"] != CPF for r in kroton.requests_log(since=seen))
    with session_scope(url) as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(Subscription)
                .where(Subscription.order_id.in_([1, 2, 4]), Subscription.status != "erased")
            )
            == 0
        )
    assert traces(url, TRACES) == []

    # a second erase finds nothing left to do
    with session_scope(url) as session:
        again = privacy.erase(session, _find(url, "order:1"))
    assert again.counts["subscriptions"] == 0 and again.counts["tombstones"] == 0
    assert sum(again.counts.values()) == 0


def test_export_is_everything_about_the_student_in_a_0600_file(
    world: Harness, tmp_path: Path
) -> None:
    path = tmp_path / "out" / "export.json"
    with session_scope(world.db_url) as session:
        written = privacy.export(session, _find(world.db_url, CPF), path, source=OrdersSource())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    document = json.loads(text)
    assert document["cpf"] == CPF
    assert {s["order_id"] for s in document["subscriptions"]} == {1, 2}
    assert all(s["cpf"] == CPF for s in document["subscriptions"])
    assert document["follow_ups"][0]["source"]["nome"] == NAME
    assert document["intake_quarantine"][0]["order_id"] == 4
    assert {o["id"] for o in document["orders_source"]} == {1, 2, 4}
    assert document["orders_source"][0]["payload"]["base_user"]["email"] == EMAIL
    assert any(e["response"] for e in document["subscription_events"])
    assert written["subscriptions"] == 2 and written["orders_source"] == 3
    assert OTHER_CPF not in text and fmt_cpf(OTHER_CPF) not in text  # only this student
    found = _find(world.db_url, CPF)
    with pytest.raises(FileExistsError), session_scope(world.db_url) as session:
        privacy.export(session, found, path)  # never overwrites
    with session_scope(world.db_url) as session:
        audit = session.scalars(select(PrivacyRequest)).all()
    assert [(a.kind, a.requested_via) for a in audit] == [("export", "cli")]


def test_the_cli_serves_both_and_reads_the_cpf_from_stdin(
    world: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "cli-export.json"
    assert main(["privacy", "export", fmt_cpf(CPF), "-o", str(path)]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    out = capsys.readouterr().out
    assert str(path) in out and CPF not in out  # the key is shown masked

    monkeypatch.setattr("sys.stdin", io.StringIO(CPF + "\n"))
    assert main(["privacy", "erase", "-", "--dry-run"]) == 0
    assert "would erase" in capsys.readouterr().out
    assert traces(world.db_url, TRACES)
    monkeypatch.setattr("sys.stdin", io.StringIO(CPF + "\n"))
    assert main(["privacy", "erase", "-"]) == 0
    assert traces(world.db_url, TRACES) == []
    assert main(["privacy", "erase", fmt_cpf(make_cpf(999))]) == 1  # nothing held
    assert main(["privacy", "export", "nobody"]) == 2


def test_an_erase_waits_for_a_live_run(anubis_env: str) -> None:
    from anubis_dagster_tests.test_intake_service import run_intake

    run_intake(anubis_env, make_order(1, cpf=CPF, full_name=NAME))
    with session_scope(anubis_env) as session:
        sub = harness_sub(session, 1)
        sub.claimed_by, sub.claimed_until = "run-x", utcnow() + timedelta(minutes=5)
    with session_scope(anubis_env) as session, pytest.raises(privacy.ErasureBusy, match="#"):
        privacy.erase(session, _find(anubis_env, CPF))
    assert traces(anubis_env, (CPF,))  # nothing was erased


def test_launchpad_jobs_take_ids_never_a_cpf(world: Harness) -> None:
    instance = world.instance
    runs_before = len(instance.get_runs())
    for job_name, op in (
        ("privacy_export", "privacy_export_op"),
        ("privacy_erase", "privacy_erase_op"),
        ("student_lookup", "find_student_op"),
    ):
        job = world.defs.resolve_job_def(job_name)
        for typed in (fmt_cpf(CPF), CPF, f"cpf:{CPF}"):
            with pytest.raises(dg.DagsterInvalidConfigError, match="CPF is not accepted"):
                job.execute_in_process(
                    run_config={"ops": {op: {"config": {"key": typed}}}}, instance=instance
                )
    assert len(instance.get_runs()) == runs_before  # refused before any run existed

    export = world.defs.resolve_job_def("privacy_export").execute_in_process(
        run_config={"ops": {"privacy_export_op": {"config": {"key": "order:1"}}}},
        instance=instance,
    )
    path = Path(op_metadata(export, "privacy_export_op")["path"])
    assert export.run_id in path.name and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["cpf"] == CPF  # found through the order

    with session_scope(world.db_url) as session:
        sub_id = harness_sub(session, 2, "estacio").id
    erase = world.defs.resolve_job_def("privacy_erase")
    dry = erase.execute_in_process(
        run_config={
            "ops": {"privacy_erase_op": {"config": {"key": f"#{sub_id}", "dry_run": True}}}
        },
        instance=instance,
    )
    assert op_metadata(dry, "privacy_erase_op")["rows:subscriptions"] == 2
    assert traces(world.db_url, TRACES)
    done = erase.execute_in_process(
        run_config={"ops": {"privacy_erase_op": {"config": {"key": f"#{sub_id}"}}}},
        instance=instance,
    )
    assert op_metadata(done, "privacy_erase_op")["rows:subscriptions"] == 2
    assert traces(world.db_url, TRACES) == []
    # nothing Dagster keeps of these runs (config, tags, events) holds the CPF
    for run in instance.get_runs():
        stored = json.dumps([run.run_config, run.tags])
        assert CPF not in stored and fmt_cpf(CPF) not in stored
        for record in instance.all_logs(run.run_id):
            assert CPF not in str(record.user_message) and EMAIL not in str(record.user_message)
    with session_scope(world.db_url) as session:
        audit = session.scalars(select(PrivacyRequest).order_by(PrivacyRequest.id)).all()
    assert [(a.kind, a.requested_via, a.dagster_run_id) for a in audit] == [
        ("export", "launchpad", export.run_id),
        ("erase", "launchpad", done.run_id),
    ]
