"""Retention by age over every status and every place personal data lands (issue 22, item 5),
on SQLite and PostgreSQL: old rows anonymised, young ones kept, counts per place in the report,
a dry run that counts the same and changes nothing, and a second run that changes nothing. The
retention job also deletes lookup runs holding a CPF and old compute logs."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import JSON, String, Text, cast, select

from anubis_dagster.core.states import FINAL_STATUSES, Status, holds_cpf
from anubis_dagster.db.models import (
    Base,
    FollowUp,
    IntakeQuarantine,
    Integration,
    Subscription,
    SubscriptionEvent,
)
from anubis_dagster.db.session import session_scope
from anubis_dagster.definitions import build_definitions
from anubis_dagster.maintenance import jobs as maintenance
from anubis_dagster.maintenance import pii
from anubis_dagster.maintenance.compute_logs import purge_old_files
from anubis_dagster.maintenance.personal_data import PLACES, REMOVED
from anubis_dagster_tests.factories import make_cpf, make_order
from anubis_dagster_tests.harness import op_metadata
from anubis_dagster_tests.test_intake_service import run_intake

NOW = datetime.now(UTC)
CUTOFF = NOW - timedelta(days=365)
OPEN_CUTOFF = NOW - timedelta(days=730)
#: past both retentions; past the first only (an idle open subscription); young
AGES = {"old": 800, "idle": 400, "young": 10}
NAME = "Josefina Quiteria Barbosa"
OPEN = [s for s in Status if s not in pii.RETAINED_STATUSES]
RETAINED = [s for s in Status if s in pii.RETAINED_STATUSES]


def _build(db_url: str) -> dict[tuple[Status, str], int]:
    """One subscription per status and age, each with personal data in every place: an attempt
    with its bodies and error text, a follow-up, `last_error`, a quarantined order. Written
    oldest first, as time writes them (events are append-only)."""
    run_intake(db_url)  # the integrations
    ids: dict[tuple[Status, str], int] = {}
    with session_scope(db_url) as session:
        kroton = session.scalars(select(Integration.id).where(Integration.key == "kroton")).one()
        n = 0
        for age, days in AGES.items():
            when = NOW - timedelta(days=days)
            for status in Status:
                n += 1
                order_id, cpf = 1000 + n, make_cpf(1000 + n)
                stamps = {"created_at": when, "updated_at": when}
                sub = Subscription(
                    integration_id=kroton,
                    order_id=order_id,
                    cpf=cpf,
                    active_cpf=cpf if holds_cpf(status) else None,
                    payload=make_order(order_id, cpf=cpf, full_name=NAME),
                    status=status.value,
                    first_name="JOSEFINA",
                    ies_data={"endereco": "Avenida Paulista 1000"},
                    last_error=f"partner: {NAME} already registered",
                    **stamps,
                )
                session.add(sub)
                session.flush()
                ids[(status, age)] = sub.id
                session.add(
                    SubscriptionEvent(
                        subscription_id=sub.id,
                        integration_id=kroton,
                        kind="attempt",
                        operation_name="register",
                        request={"cpf": cpf, "nome": NAME},
                        response={"mensagem": f"{NAME} exists"},
                        error_message=f"{{'nome': '{NAME}'}}",
                        **stamps,
                    )
                )
                session.add(
                    FollowUp(
                        subscription_id=sub.id,
                        external_id=f"INSC-{n}",
                        source={"nome": NAME},
                        **stamps,
                    )
                )
                session.add(
                    IntakeQuarantine(
                        order_id=order_id,
                        integration_key="kroton",
                        kind="write_failed",
                        reason=f"refused: {NAME}",
                        **stamps,
                    )
                )
    return ids


def _snapshot(db_url: str) -> list[tuple[str, tuple[Any, ...]]]:
    """Every text and JSON value of every table, for "nothing changed"."""
    rows = []
    with session_scope(db_url) as session:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, (String, Text, JSON))]
            if columns:
                query = select(*[cast(c, Text) for c in columns]).order_by(*table.primary_key)
                rows += [(table.name, tuple(r)) for r in session.execute(query)]
    return rows


def _retention(db_url: str, *, dry_run: bool = False, batch_size: int = 7) -> pii.RetentionReport:
    return pii.apply_retention(
        lambda: session_scope(db_url),
        CUTOFF,
        open_cutoff=OPEN_CUTOFF,
        batch_size=batch_size,  # several batches of every kind
        dry_run=dry_run,
    )


def test_retention_covers_every_status_and_place(db_url: str) -> None:
    ids = _build(db_url)
    aged = 2 * len(Status)  # old and idle rows, in every place
    before = _snapshot(db_url)

    preview = _retention(db_url, dry_run=True)
    assert _snapshot(db_url) == before  # a dry run changes nothing
    report = _retention(db_url)
    expected = {
        "subscriptions_anonymized": 2 * len(RETAINED),  # finished: old and idle
        "subscriptions_expired": len(OPEN),  # open: only past the longer age
        **{f"rows_scrubbed:{p.name}": aged for p in PLACES},
    }
    for counted in (preview, report):
        metadata = counted.as_metadata()
        assert {k: metadata[k] for k in expected} == expected, metadata
    assert report.batches > len(PLACES) + 3  # batch_size=7 really batches

    with session_scope(db_url) as session:
        for (status, age), sub_id in ids.items():
            sub = session.get(Subscription, sub_id)
            assert sub is not None
            events = session.scalars(
                select(SubscriptionEvent)
                .where(SubscriptionEvent.subscription_id == sub_id)
                .order_by(SubscriptionEvent.id)
            ).all()
            follow_up = session.scalars(
                select(FollowUp).where(FollowUp.subscription_id == sub_id)
            ).one()
            quarantine = session.scalars(
                select(IntakeQuarantine).where(IntakeQuarantine.order_id == sub.order_id)
            ).one()
            first = events[0]
            where = f"{status.value}/{age}"
            if age == "young":  # everything kept
                assert sub.cpf and sub.payload["base_user"]["full_name"] == NAME, where
                assert sub.last_error and first.request and first.error_message, where
                assert follow_up.source == {"nome": NAME} and NAME in quarantine.reason, where
                assert sub.status == status.value and sub.anonymized_at is None, where
                continue
            # every place of an aged row is scrubbed, whatever the status
            assert (first.request, first.response, first.error_message) == (None, None, None)
            assert follow_up.source == {} and quarantine.reason == REMOVED, where
            assert sub.last_error is None, where
            if status in pii.RETAINED_STATUSES or age == "old":
                assert sub.cpf is None and sub.first_name is None and sub.ies_data == {}, where
                assert "base_user" not in sub.payload and sub.payload["id"] == sub.order_id
                assert sub.anonymized_at is not None, where
            if status in pii.RETAINED_STATUSES:
                assert sub.status == status.value, where  # outcome kept
                # only a final status that holds a CPF keeps it, to refuse a second registration
                assert (sub.active_cpf is not None) == holds_cpf(status), where
            elif age == "old":  # an open subscription past the longer age: closed
                assert sub.status == Status.EXPIRED.value and sub.active_cpf is None, where
                assert events[-1].status == "expired" and events[-1].operation_name == "retention"
                assert "no activity for 730 days" in (events[-1].error_message or "")
            else:  # open and idle for a year: kept, with its data, to be worked
                assert sub.status == status.value and sub.anonymized_at is None, where
                assert sub.cpf and sub.payload["base_user"]["full_name"] == NAME, where

    # nothing of an aged row's personal data is left anywhere but the idle open subscriptions
    idle_open = {ids[(s, "idle")] for s in OPEN}
    with session_scope(db_url) as session:
        holders = {
            sub.id
            for sub in session.scalars(select(Subscription))
            if NAME in str(sub.payload) or NAME in (sub.last_error or "")
        }
    young = {ids[(s, "young")] for s in Status}
    assert holders == young | idle_open

    after = _snapshot(db_url)
    again = _retention(db_url)
    assert again.subscriptions_anonymized == again.subscriptions_expired == 0
    assert set(again.places.values()) == {0}
    assert _snapshot(db_url) == after  # a second run changes nothing


def test_expired_is_final_and_its_order_is_not_taken_again(db_url: str) -> None:
    ids = _build(db_url)
    _retention(db_url)
    assert Status.EXPIRED in FINAL_STATUSES and Status.ERASED in FINAL_STATUSES
    sub_id = ids[(Status.REGISTERED, "old")]
    with session_scope(db_url) as session:
        sub = session.get(Subscription, sub_id)
        assert sub is not None
        order_id = sub.order_id
    report = run_intake(db_url, make_order(order_id, full_name=NAME))  # the same order again
    assert report.created == 0
    with session_scope(db_url) as session:
        sub = session.get(Subscription, sub_id)
        assert sub is not None and sub.status == "expired" and sub.cpf is None


def test_compute_logs_older_than_the_cutoff_go(tmp_path: Path) -> None:
    base = tmp_path / "storage"
    old_file = base / "run-a" / "compute_logs" / "step.out"
    young_file = base / "run-b" / "compute_logs" / "step.err"
    for path in (old_file, young_file):
        path.parent.mkdir(parents=True)
        path.write_text("Maria Aparecida 529.982.247-25")
    long_ago = time.time() - 40 * 86400
    os.utime(old_file, (long_ago, long_ago))
    cutoff = datetime.now(UTC) - timedelta(days=30)
    assert purge_old_files(base, cutoff, dry_run=True).files == 1 and old_file.exists()
    purge = purge_old_files(base, cutoff)
    assert (purge.files, purge.bytes) == (1, len("Maria Aparecida 529.982.247-25"))
    assert not old_file.exists() and not (base / "run-a").exists() and young_file.exists()
    assert purge_old_files(base, cutoff).files == 0  # idempotent
    assert base.is_dir()


def test_retention_job_reports_per_place_and_cleans_dagster_storage(
    anubis_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _build(anubis_env)
    (tmp_path / "dagster").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster"))

    # a pre-issue-22 lookup run whose config holds a CPF, and one that holds an order id
    def lookup_run(key: str) -> str:
        run = dg.DagsterRun(
            job_name="student_lookup",
            run_id=str(uuid.uuid4()),
            run_config={"ops": {"find_student_op": {"config": {"key": key}}}},
        )
        return instance.add_run(run).run_id

    legacy = lookup_run("529.982.247-25")
    by_order = lookup_run("order:7")
    logs = Path(instance.compute_log_manager._base_dir)  # type: ignore[attr-defined]
    old_log = logs / "some-run" / "compute_logs" / "step.out"
    old_log.parent.mkdir(parents=True)
    old_log.write_text("output")
    long_ago = time.time() - 40 * 86400
    os.utime(old_log, (long_ago, long_ago))

    job = build_definitions().resolve_job_def("retention_job")
    dry = {
        "ops": {
            name: {"config": {"dry_run": True}}
            for name in ("delete_old_runs", "delete_old_compute_logs", "anonymize_personal_data")
        }
    }
    preview = job.execute_in_process(instance=instance, run_config=dry)
    pii_meta = op_metadata(preview, "anonymize_personal_data")
    assert pii_meta["dry_run"] is True
    assert pii_meta["subscriptions_anonymized"] == 2 * len(RETAINED)
    assert pii_meta["subscriptions_expired"] == len(OPEN)
    assert all(pii_meta[f"rows_scrubbed:{p.name}"] == 2 * len(Status) for p in PLACES)
    assert op_metadata(preview, "delete_old_runs")["personal_runs_deleted"] == 1
    assert op_metadata(preview, "delete_old_compute_logs")["files_deleted"] == 1
    assert instance.get_run_by_id(legacy) is not None and old_log.exists()

    result = job.execute_in_process(instance=instance)
    assert op_metadata(result, "anonymize_personal_data")["subscriptions_expired"] == len(OPEN)
    assert instance.get_run_by_id(legacy) is None  # held a CPF: gone at once
    assert instance.get_run_by_id(by_order) is not None  # young, and holds an id only
    assert not old_log.exists()

    class FortyDaysLater(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            return datetime.now(tz) + timedelta(days=40)

    monkeypatch.setattr(maintenance, "datetime", FortyDaysLater)
    later = job.execute_in_process(instance=instance)
    assert op_metadata(later, "delete_old_runs")["personal_runs_deleted"] == 1
    assert instance.get_run_by_id(by_order) is None  # past ANUBIS_LOG_RETENTION_DAYS
    assert op_metadata(later, "anonymize_personal_data")["subscriptions_anonymized"] == 0


def test_the_ages_are_settings_checked_by_the_doctor(
    anubis_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anubis_dagster.doctor import diagnose

    monkeypatch.setenv("ANUBIS_PII_OPEN_RETENTION_DAYS", "400")
    assert any(
        "retention: personal data 365 days (idle open subscriptions 400)" in line
        for line in diagnose().checks
    )
    monkeypatch.setenv("ANUBIS_PII_OPEN_RETENTION_DAYS", "100")  # below the 365 of the rest
    monkeypatch.setenv("ANUBIS_LOG_RETENTION_DAYS", "0")
    problems = diagnose().problems
    assert any(p.startswith("ANUBIS_LOG_RETENTION_DAYS: must be at least 1") for p in problems)
    monkeypatch.setenv("ANUBIS_LOG_RETENTION_DAYS", "30")
    problems = diagnose().problems
    assert any(
        "ANUBIS_PII_OPEN_RETENTION_DAYS must be at least ANUBIS_PII_RETENTION_DAYS" in p
        for p in problems
    ), problems


def test_a_place_matched_on_cpf_finds_nothing_for_a_subject_without_one(db_url: str) -> None:
    """The helper a CPF-keyed table (a legacy import) uses: no CPF known, no row matched, not
    the rows whose CPF is NULL."""
    from anubis_dagster.maintenance.personal_data import Subject, cpf_is

    run_intake(db_url, make_order(1), make_order(2, cpf="123"))  # 2: invalid CPF, stored NULL
    match = cpf_is(Subscription.cpf)
    with session_scope(db_url) as session:
        count = lambda subject: len(  # noqa: E731
            session.scalars(select(Subscription.id).where(match(subject))).all()
        )
        assert count(Subject(None, (), ())) == 0
        assert count(Subject(make_cpf(1), (), ())) == 1


def test_erased_and_expired_are_final_moves_outside_the_ordinary_machine() -> None:
    from anubis_dagster.core.states import RELEASES_CPF, is_allowed

    assert is_allowed(Status.ENROLLED, Status.ERASED)  # an erase reaches any status
    assert is_allowed(Status.INVALID, Status.ERASED)
    assert not is_allowed(Status.ERASED, Status.ERASED)
    assert is_allowed(Status.REGISTERED, Status.EXPIRED)  # retention closes open ones only
    assert not is_allowed(Status.ENROLLED, Status.EXPIRED)
    assert not is_allowed(Status.ERASED, Status.TO_REGISTER, requeue=True)  # never requeued
    assert not is_allowed(Status.EXPIRED, Status.TO_REGISTER, requeue=True)
    assert {Status.ERASED, Status.EXPIRED} <= RELEASES_CPF & FINAL_STATUSES
    assert not is_allowed(None, Status.ERASED)  # intake never creates one
