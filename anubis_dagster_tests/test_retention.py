from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from anubis_dagster.core.states import Status
from anubis_dagster.db.models import Cursor, FollowUp, Subscription, SubscriptionEvent
from anubis_dagster.db.session import session_scope
from anubis_dagster.db.transitions import transition
from anubis_dagster.definitions import build_definitions
from anubis_dagster.delivery.requeue import requeue
from anubis_dagster.maintenance import jobs as maintenance
from anubis_dagster.maintenance import pii
from anubis_dagster_tests.factories import make_cpf, make_order
from anubis_dagster_tests.test_intake_service import run_intake


@dg.op
def noop() -> None:
    pass


@dg.job
def some_job() -> None:
    noop()


def test_retention_deletes_old_runs_only(anubis_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    instance = dg.DagsterInstance.ephemeral()
    old = some_job.execute_in_process(instance=instance).run_id
    job = build_definitions().resolve_job_def("retention_job")
    config = {"ops": {"delete_old_runs": {"config": {"run_retention_days": 1}}}}

    result = job.execute_in_process(instance=instance, run_config=config)
    assert result.output_for_node("delete_old_runs") == 0  # nothing is a day old yet
    assert instance.get_run_by_id(old) is not None

    class TwoDaysLater(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            return datetime.now(tz) + timedelta(days=2)

    monkeypatch.setattr(maintenance, "datetime", TwoDaysLater)
    result = job.execute_in_process(instance=instance, run_config=config)
    assert result.output_for_node("delete_old_runs") == 2  # the old run and the first check
    assert instance.get_run_by_id(old) is None
    assert instance.get_run_by_id(result.run_id) is not None


# --------------------------------------------------------------------------------------------
# LGPD retention of the app DB (maintenance/pii.py)
# --------------------------------------------------------------------------------------------
NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=400)  # past the default 365 days
RECENT = NOW - timedelta(days=100)
CUTOFF = NOW - timedelta(days=365)


def _factory(db_url: str) -> pii.SessionFactory:
    return lambda: session_scope(db_url)


def _walk(session: Session, sub: Subscription, *statuses: Status) -> None:
    """Move `sub` through `statuses` with an attempt-like request/response on each step."""
    for status in statuses:
        transition(
            session,
            sub,
            status,
            operation="test",
            request={"cpf": sub.cpf, "nome": "Maria Aparecida dos Santos"},
            response={"status": status.value, "email": "maria@example.com.br"},
        )


def _age(db_url: str, sub_id: int, when: datetime) -> None:
    """Backdate a subscription's last change and its events (explicit values skip onupdate)."""
    with session_scope(db_url) as session:
        session.execute(
            update(Subscription).where(Subscription.id == sub_id).values(updated_at=when)
        )
        session.execute(
            update(SubscriptionEvent)
            .where(SubscriptionEvent.subscription_id == sub_id)
            .values(created_at=when)
        )


def _scenario(db_url: str) -> dict[str, int]:
    """Subscriptions on both sides of the cutoff, in final and non-final statuses. The old ones
    are written (and backdated) first, so event ids grow with time as they do in production."""
    old = {
        "failed_old": (1, (Status.TO_REGISTER, Status.FAILED)),
        "enrolled_old": (2, (Status.TO_REGISTER, Status.REGISTERED, Status.ENROLLED)),
        "registered_old": (4, (Status.TO_REGISTER, Status.REGISTERED)),  # in progress
        "awaiting_old": (5, (Status.TO_REGISTER, Status.AWAITING_REGISTER)),  # in progress
        "invalid_old": (7, ()),
    }
    recent = {
        "failed_recent": (3, (Status.TO_REGISTER, Status.FAILED)),
        "to_register_recent": (6, (Status.TO_REGISTER,)),  # in progress
    }
    ids: dict[str, int] = {}
    for group, when in ((old, OLD), (recent, RECENT)):
        run_intake(
            db_url,
            *[
                make_order(o, email="maria@") if o == 7 else make_order(o)
                for o, _ in group.values()
            ],
        )
        with session_scope(db_url) as session:
            by_order = {s.order_id: s for s in session.scalars(select(Subscription))}
            for name, (order_id, path) in group.items():
                ids[name] = by_order[order_id].id
                _walk(session, by_order[order_id], *path)
            for name in ("enrolled_old", "registered_old"):
                if name in group:
                    session.add(
                        FollowUp(
                            subscription_id=ids[name],
                            external_id=f"INSC-{ids[name]}",
                            source={"nome": "Maria Aparecida dos Santos", "situacao": "Aluno"},
                        )
                    )
        for name in group:
            _age(db_url, ids[name], when)
    return ids


def _sub(session: Session, sub_id: int) -> Subscription:
    sub = session.get(Subscription, sub_id)
    assert sub is not None
    return sub


def _payloads(session: Session, sub_id: int) -> list[tuple[object, object]]:
    return [
        (e.request, e.response)
        for e in session.scalars(
            select(SubscriptionEvent)
            .where(SubscriptionEvent.subscription_id == sub_id)
            .order_by(SubscriptionEvent.id)
        )
    ]


def test_pii_retention_drops_personal_data_of_old_final_subscriptions_only(db_url: str) -> None:
    ids = _scenario(db_url)
    with session_scope(db_url) as session:
        before = {
            sid: (_sub(session, sid).status, _sub(session, sid).updated_at) for sid in ids.values()
        }
        events_before = session.scalar(select(func.count()).select_from(SubscriptionEvent))

    report = pii.apply_retention(_factory(db_url), CUTOFF, batch_size=2)

    assert report.subscriptions_anonymized == 3  # failed_old, enrolled_old, invalid_old
    assert report.follow_ups_cleared == 1
    assert report.batches >= 2  # batch_size=2 really batches
    with session_scope(db_url) as session:
        for name in ("failed_old", "enrolled_old", "invalid_old"):
            sub = _sub(session, ids[name])
            assert sub.cpf is None and sub.first_name is None and sub.ies_data == {}
            assert sub.anonymized_at is not None
            assert "base_user" not in sub.payload
            assert sub.payload["offer"]["course"]["name"] == "Administração"  # what, not who
            assert sub.payload["id"] == sub.order_id
            assert all(p == (None, None) for p in _payloads(session, ids[name]))
            # outcome, status and the time of the last real change are kept
            assert (sub.status, sub.updated_at) == before[ids[name]]
        enrolled = _sub(session, ids["enrolled_old"])
        assert enrolled.active_cpf == make_cpf(2)  # still blocks a second registration
        follow_up = session.scalars(
            select(FollowUp).where(FollowUp.subscription_id == ids["enrolled_old"])
        ).one()
        assert (follow_up.source, follow_up.external_id) == ({}, f"INSC-{enrolled.id}")

        # not final, or final but recent: personal fields untouched
        for name in ("failed_recent", "registered_old", "awaiting_old", "to_register_recent"):
            sub = _sub(session, ids[name])
            assert sub.cpf is not None and sub.anonymized_at is None
            assert sub.payload["base_user"]["full_name"] == "Maria Aparecida dos Santos"
        registered = session.scalars(
            select(FollowUp).where(FollowUp.subscription_id == ids["registered_old"])
        ).one()
        assert registered.source["nome"] == "Maria Aparecida dos Santos"
        # attempt payloads go by age, whatever the status
        for name in ("registered_old", "awaiting_old"):
            assert all(p == (None, None) for p in _payloads(session, ids[name]))
        for name in ("failed_recent", "to_register_recent"):
            assert all(p != (None, None) for p in _payloads(session, ids[name])[1:])
        # every event row is kept: counts and histories survive
        assert session.scalar(select(func.count()).select_from(SubscriptionEvent)) == events_before

    again = pii.apply_retention(_factory(db_url), CUTOFF)
    assert (again.subscriptions_anonymized, again.event_payloads_dropped) == (0, 0)  # idempotent


def test_an_anonymised_enrolled_student_still_cannot_be_registered_twice(db_url: str) -> None:
    ids = _scenario(db_url)
    pii.apply_retention(_factory(db_url), CUTOFF)
    run_intake(db_url, make_order(50, cpf=make_cpf(2)))  # the enrolled student pays again
    with session_scope(db_url) as session:
        new = session.scalars(select(Subscription).where(Subscription.order_id == 50)).one()
        assert new.status == Status.DUPLICATE.value
        clash = Subscription(
            integration_id=_sub(session, ids["enrolled_old"]).integration_id,
            order_id=51,
            payload={},
            status=Status.TO_REGISTER.value,
            active_cpf=make_cpf(2),
        )
        session.add(clash)
        with pytest.raises(IntegrityError):
            session.flush()
        session.rollback()
    # a released CPF (the old dead letter) may start again, as before retention
    run_intake(db_url, make_order(52, cpf=make_cpf(1)))
    with session_scope(db_url) as session:
        again = session.scalars(select(Subscription).where(Subscription.order_id == 52)).one()
        assert again.status == Status.TO_SYNC.value


def test_a_row_changed_after_anonymisation_is_due_again_when_old(db_url: str) -> None:
    ids = _scenario(db_url)
    pii.apply_retention(_factory(db_url), CUTOFF)
    corrected = make_order(7, updated_at=NOW - timedelta(days=1))  # the refused order, fixed
    run_intake(db_url, corrected)
    with session_scope(db_url) as session:
        sub = _sub(session, ids["invalid_old"])
        assert sub.cpf == make_cpf(7) and sub.payload["base_user"]  # personal data is back
        assert sub.status == Status.TO_SYNC.value
        transition(session, sub, Status.EMPTY_COURSE, operation="test")
    assert pii.apply_retention(_factory(db_url), CUTOFF).subscriptions_anonymized == 0  # young
    # a year on, it is old again (and so is the recent dead letter); the enrolled row, untouched
    # since it was anonymised, is not done twice
    later = NOW + timedelta(days=1)
    assert pii.apply_retention(_factory(db_url), later).subscriptions_anonymized == 2
    with session_scope(db_url) as session:
        for name in ("invalid_old", "failed_recent"):
            sub = _sub(session, ids[name])
            assert sub.cpf is None and "base_user" not in sub.payload


def test_event_payload_purge_resumes_from_its_position(db_url: str) -> None:
    _scenario(db_url)
    first = pii.purge_event_payloads(_factory(db_url), CUTOFF, batch_size=3)
    assert first.event_payloads_dropped > 0
    with session_scope(db_url) as session:
        position = session.get(Cursor, pii.EVENTS_CURSOR)
        assert position is not None
        young = session.scalars(
            select(SubscriptionEvent).where(SubscriptionEvent.created_at >= CUTOFF)
        ).all()
        assert young and all(int(position.value) < e.id for e in young)
        # an old event below the position that somehow kept its payload is not re-read
        assert (
            session.scalar(
                select(func.count())
                .select_from(SubscriptionEvent)
                .where(
                    SubscriptionEvent.id <= int(position.value),
                    SubscriptionEvent.request.is_not(None),
                )
            )
            == 0
        )
    assert pii.purge_event_payloads(_factory(db_url), CUTOFF).event_payloads_dropped == 0


def test_pii_retention_days_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pii.PII_RETENTION_DAYS_ENV, raising=False)
    assert pii.pii_retention_days_from_env() == 365
    monkeypatch.setenv(pii.PII_RETENTION_DAYS_ENV, "30")
    assert pii.pii_retention_days_from_env() == 30
    for bad in ("0", "-3", "a year"):
        monkeypatch.setenv(pii.PII_RETENTION_DAYS_ENV, bad)
        with pytest.raises(ValueError, match=pii.PII_RETENTION_DAYS_ENV):
            pii.pii_retention_days_from_env()


def test_retention_job_reports_how_many_rows_it_anonymised(
    anubis_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _scenario(anubis_env)
    monkeypatch.setenv(pii.PII_RETENTION_DAYS_ENV, "365")
    instance = dg.DagsterInstance.ephemeral()
    job = build_definitions().resolve_job_def("retention_job")
    result = job.execute_in_process(instance=instance)
    assert result.output_for_node("anonymize_personal_data") == 3
    (output,) = [
        e
        for e in result.events_for_node("anonymize_personal_data")
        if e.event_type_value == "STEP_OUTPUT"
    ]
    metadata = output.step_output_data.metadata
    assert metadata["subscriptions_anonymized"].value == 3
    dropped = metadata["event_payloads_dropped"].value
    assert isinstance(dropped, int) and dropped > 0
    with session_scope(anubis_env) as session:
        assert _sub(session, ids["failed_old"]).cpf is None
    # the Launchpad can shorten the retention for one run: 30 days reaches the recent dead letter
    config = {"ops": {"anonymize_personal_data": {"config": {"pii_retention_days": 30}}}}
    result = job.execute_in_process(instance=instance, run_config=config)
    assert result.output_for_node("anonymize_personal_data") == 1


def test_an_anonymised_dead_letter_is_not_requeued(db_url: str) -> None:
    """Requeue would send an empty payload: it refuses, saying why, and changes nothing."""
    ids = _scenario(db_url)
    pii.apply_retention(_factory(db_url), CUTOFF)
    with session_scope(db_url) as session:
        failed = _sub(session, ids["failed_old"])
        report = requeue(session, failed.integration_id, ids=[failed.id, ids["failed_recent"]])
    assert report.requeued == [ids["failed_recent"]]  # the recent one still has its data
    assert report.skipped == [
        {"id": ids["failed_old"], "reason": "personal data removed by retention (LGPD)"}
    ]
    with session_scope(db_url) as session:
        assert _sub(session, ids["failed_old"]).status == Status.FAILED.value


def test_a_row_locked_by_another_transaction_is_skipped_not_waited_for(db_url: str) -> None:
    """PostgreSQL: a subscription another run holds (e.g. intake revalidating it) is left for
    the next run instead of blocking retention or being overwritten under it."""
    if not db_url.startswith("postgresql"):
        pytest.skip("row locks with SKIP LOCKED are PostgreSQL's; SQLite has one writer")
    ids = _scenario(db_url)
    with session_scope(db_url) as holder:
        holder.execute(
            select(Subscription.id).where(Subscription.id == ids["failed_old"]).with_for_update()
        ).all()
        report = pii.apply_retention(_factory(db_url), CUTOFF)
        assert report.subscriptions_anonymized == 2  # enrolled_old and invalid_old
    with session_scope(db_url) as session:
        assert _sub(session, ids["failed_old"]).cpf is not None
    assert pii.apply_retention(_factory(db_url), CUTOFF).subscriptions_anonymized == 1
