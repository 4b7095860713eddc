"""A registration whose answer is lost is an unknown outcome, for every adapter (the rule lives
in `clients/` + `delivery/`): the partner is asked before anything is resent, or the student is
held for a person where the partner cannot be asked. Our own credentials or an outage stop the
batch without charging any student. Over real HTTP against the sandboxes, on SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

import anubis_dagster_tests.third_ies.adapter  # noqa: F401  (registers the `tiny_ies` adapter)
from anubis_dagster.clients import http
from anubis_dagster.config.integrations import FILE_ENV, load_integrations
from anubis_dagster.db.models import Subscription, SubscriptionEvent
from anubis_dagster.db.session import session_scope
from anubis_dagster_tests.factories import ESTACIO_OFFER, make_cpf, make_order
from anubis_dagster_tests.harness import Harness, assert_attempts_match, op_metadata
from anubis_dagster_tests.test_estacio_e2e import estacio  # noqa: F401  (fixture)
from anubis_dagster_tests.test_secrets_e2e import _alert_failed_runs
from anubis_dagster_tests.test_third_adapter import TINY_ENTRY, TINY_OFFER
from anubis_dagster_tests.third_ies.server import TinyServer, TinySettings
from anubis_sandboxes.estacio import EstacioSandbox
from anubis_sandboxes.kroton import KrotonSandbox
from anubis_sandboxes.webhook_sink import WebhookSink

LOST = ("lost_answer_rate", "truncated_answer_rate")


@pytest.fixture
def tiny(anubis_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TinyServer]:
    server = TinyServer(TinySettings(fault_endpoints="register"))
    monkeypatch.setenv("TINY_IES_URL", server.start())
    path = tmp_path / "integrations.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "integrations": [TINY_ENTRY]}))
    monkeypatch.setenv(FILE_ENV, str(path))
    yield server
    server.stop()


def register_posts(sandbox: KrotonSandbox | EstacioSandbox | TinyServer) -> int:
    return sum(1 for r in sandbox.requests_log() if r["endpoint"] == "register")


def attempt_outcomes(db_url: str, operation: str) -> list[str]:
    with session_scope(db_url) as session:
        return list(
            session.scalars(
                select(SubscriptionEvent.outcome)
                .where(SubscriptionEvent.kind == "attempt")
                .where(SubscriptionEvent.operation_name == operation)
                .order_by(SubscriptionEvent.id)
            )
        )


@pytest.mark.parametrize("fault", LOST)
def test_kroton_lost_answer_is_asked_by_cpf_not_resent(
    kroton: KrotonSandbox, anubis_env: str, fault: str
) -> None:
    harness = Harness(anubis_env)
    harness.ingest([make_order(1)])
    kroton.configure(fault_endpoints="register", **{fault: 1.0})
    assert harness.deliver().success
    sub = harness.subscription(1)
    assert sub.status == "to_register" and sub.sending_since is not None  # unknown, marked
    assert attempt_outcomes(anubis_env, "register") == ["lost_answer"]
    assert register_posts(kroton) == 1  # not repeated in the call: a write is never blind

    kroton.configure(**{fault: 0.0})
    assert harness.deliver().success
    sub = harness.subscription(1)
    assert sub.status in ("awaiting_register", "registered")
    assert sub.sending_since is None and sub.external_id
    assert register_posts(kroton) == 1  # found at Kroton by CPF: never sent twice
    assert kroton.stats()["duplicates_refused"] == 0
    assert kroton.stats()["registrations_per_cpf"] == {make_cpf(1): 1}
    notes = [e.response for e in harness.events(1) if e.kind == "transition"]
    assert any("found at the partner" in str(n) for n in notes)
    assert_attempts_match(harness, kroton)


def test_kroton_lookup_failing_keeps_the_marker_and_sends_nothing(
    kroton: KrotonSandbox, anubis_env: str
) -> None:
    harness = Harness(anubis_env)
    harness.ingest([make_order(1)])
    kroton.configure(fault_endpoints="register", lost_answer_rate=1.0)
    assert harness.deliver().success
    kroton.configure(fault_endpoints="inscriptions_by_cpf", lost_answer_rate=0.0, error_rate=1.0)
    assert harness.deliver().success
    sub = harness.subscription(1)
    assert sub.status == "to_register" and sub.sending_since is not None
    assert register_posts(kroton) == 1  # Kroton could not be asked: nothing resent
    assert_attempts_match(harness, kroton)


def test_estacio_lost_answer_is_resent_and_atl016_settles_it(
    estacio: EstacioSandbox,  # noqa: F811
    anubis_env: str,
) -> None:
    harness = Harness(anubis_env)
    harness.ingest([make_order(1, offer=ESTACIO_OFFER)])
    estacio.configure(fault_endpoints="register", lost_answer_rate=1.0)
    assert harness.deliver("estacio").success
    sub = harness.subscription(1)
    assert sub.status == "to_register" and sub.sending_since is not None
    estacio.configure(lost_answer_rate=0.0)
    assert harness.deliver("estacio").success
    sub = harness.subscription(1)
    assert sub.status == "registered" and sub.external_id and sub.sending_since is None
    stats = estacio.stats()
    assert stats["registrations_per_cpf"] == {make_cpf(1): 1}  # the resend created nothing
    assert stats["atl016"] == 1
    assert_attempts_match(harness, estacio)


def test_a_partner_that_cannot_be_asked_holds_the_student_for_review(
    tiny: TinyServer, anubis_env: str, sink: WebhookSink
) -> None:
    harness = Harness(anubis_env, load_integrations())
    harness.ingest([make_order(i, offer=TINY_OFFER) for i in (1, 2)])
    tiny.configure(truncated_answer_rate=1.0)
    result = harness.deliver("tiny")
    assert result.success
    assert harness.statuses() == {1: "unknown", 2: "unknown"}
    assert op_metadata(result, "register")["outcomes"] == {"unknown": 2}
    held = [t for t in sink.received if "unknown outcome" in t]
    assert len(held) == 1 and "2 registrations to tiny" in held[0]

    tiny.configure(truncated_answer_rate=0.0)
    assert harness.deliver("tiny").success
    assert len(tiny.received) == 2  # held: never sent again on its own
    assert not harness.due("tiny")

    # the partner has both (the answers were lost after it acted); an operator who checked
    # and found one missing requeues it: here, pretend #2 never arrived
    del tiny.students[make_cpf(2)]
    sub_id = harness.subscription(2).id
    assert harness.deliver("tiny", requeue_ids=[sub_id]).success
    assert harness.statuses() == {1: "unknown", 2: "registered"}
    assert harness.subscription(2).sending_since is None


def test_a_5xx_to_a_partner_that_cannot_be_asked_is_held_too(
    tiny: TinyServer, anubis_env: str
) -> None:
    harness = Harness(anubis_env, load_integrations())
    harness.ingest([make_order(1, offer=TINY_OFFER)])
    tiny.configure(error_rate=1.0)
    assert harness.deliver("tiny").success
    assert harness.statuses() == {1: "unknown"}  # a 5xx may hide an action: not resent


def test_wrong_credentials_cost_one_token_call_not_one_per_student(
    kroton: KrotonSandbox, anubis_env: str, sink: WebhookSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = Harness(anubis_env)
    harness.ingest([make_order(i) for i in range(1, 101)])
    monkeypatch.setenv("API_KROTON_SECRET", "not-the-secret")
    harness = Harness(anubis_env)  # definitions read the settings again
    result = harness.deliver()
    assert not result.success
    tokens = [r for r in kroton.requests_log() if r["endpoint"] == "token"]
    assert 1 <= len(tokens) <= 3
    assert register_posts(kroton) == 0
    with session_scope(anubis_env) as session:
        charged = session.scalar(select(func.count()).where(Subscription.attempts > 0))
        marked = session.scalar(select(func.count()).where(Subscription.sending_since.is_not(None)))
        dead = session.scalar(select(func.count()).where(Subscription.status == "failed"))
    assert (charged, marked, dead) == (0, 0, 0)
    assert set(harness.statuses().values()) == {"to_register"}  # synced, kept their place
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message  # type: ignore[union-attr]
    assert "kroton" in message and "API_KROTON_SECRET" in message
    assert "not-the-secret" not in message
    assert _alert_failed_runs(harness.instance) == 1
    failed_alerts = [t for t in sink.received if "Run failed" in t]
    assert len(failed_alerts) == 1 and "API_KROTON_SECRET" in failed_alerts[0]


def test_a_partner_down_stops_the_batch_without_charging_anyone(
    kroton: KrotonSandbox, anubis_env: str
) -> None:
    harness = Harness(anubis_env)
    harness.ingest([make_order(i) for i in range(1, 21)])
    assert harness.deliver().success  # synced and registered while Kroton is up
    kroton.stop()  # now nothing answers: connection refused
    with session_scope(anubis_env) as session:
        session.execute(
            Subscription.__table__.update().values(status="to_register", sending_since=None)
        )
    result = harness.deliver()
    assert not result.success
    with session_scope(anubis_env) as session:
        charged = session.scalar(select(func.count()).where(Subscription.attempts > 0))
    assert charged == 0
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "cannot be reached" in failure.event_specific_data.error.message  # type: ignore[union-attr]


def test_a_quota_spent_for_longer_than_the_run_waits_defers_without_an_attempt(
    kroton: KrotonSandbox, anubis_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_KROTON_RATE_LIMIT", "1/3600")
    harness = Harness(anubis_env)
    harness.ingest([make_order(i) for i in (1, 2)])
    # the first call (token) takes the only slot of the hour; the registrations must wait
    monkeypatch.setattr(http, "MAX_QUOTA_WAIT_SECONDS", 0.5)
    assert harness.deliver().success
    with session_scope(anubis_env) as session:
        rows = session.execute(
            select(Subscription.status, Subscription.attempts, Subscription.scheduled_to)
        ).all()
    assert all(status == "to_register" and attempts == 0 for status, attempts, _ in rows)
    assert all(when is not None for _, _, when in rows)
    assert register_posts(kroton) == 0


def test_an_unreachable_cep_lookup_stops_the_batch_without_charging_anyone(
    estacio: EstacioSandbox,  # noqa: F811
    anubis_env: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    harness = Harness(anubis_env)
    harness.ingest([make_order(i, offer=ESTACIO_OFFER) for i in (1, 2, 3)])
    monkeypatch.setenv("API_ESTACIO_CEP_BASE_URL", "http://127.0.0.1:9")  # nothing listens
    harness = Harness(anubis_env)
    result = harness.deliver("estacio")
    assert not result.success
    with session_scope(anubis_env) as session:
        charged = session.scalar(select(func.count()).where(Subscription.attempts > 0))
        marked = session.scalar(select(func.count()).where(Subscription.sending_since.is_not(None)))
    assert (charged, marked) == (0, 0)
    assert set(harness.statuses().values()) == {"to_register"}
    assert register_posts(estacio) == 0


def test_retries_running_out_on_an_unanswered_send_hold_the_student_not_fail_it(
    kroton: KrotonSandbox, anubis_env: str, sink: WebhookSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "0s,0s")  # three tries in all
    harness = Harness(anubis_env)
    harness.ingest([make_order(1)])
    kroton.configure(fault_endpoints="register", lost_answer_rate=1.0)
    assert harness.deliver().success  # sent, answer lost: unknown
    kroton.configure(fault_endpoints="inscriptions_by_cpf", lost_answer_rate=0.0, error_rate=1.0)
    harness.deliver_until_settled()  # Kroton cannot be asked, again and again
    sub = harness.subscription(1)
    assert sub.status == "unknown"  # may be registered at Kroton: never declared failed
    assert sub.sending_since is not None
    assert register_posts(kroton) == 1
    assert any("unknown outcome" in text for text in sink.received)


def test_a_claim_lost_during_the_quota_wait_sends_nothing_and_leaves_no_marker(
    kroton: KrotonSandbox, anubis_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quota wait can outlast a lease: another run may own the row by the time a slot
    frees. The fence, right before the request leaves, sees it and sends nothing."""
    from anubis_dagster.db.rate_limit import RateLimiter

    harness = Harness(anubis_env)
    harness.ingest([make_order(1)])
    acquire = RateLimiter.acquire
    taken = {"done": False}

    def acquire_then_lose_the_claim(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        granted = acquire(self, *args, **kwargs)
        if self.bucket.endswith(":api") and not taken["done"]:
            with session_scope(anubis_env) as session:
                status = session.scalar(select(Subscription.status))
                if status == "to_register":  # the register call's slot: another run takes it
                    session.execute(Subscription.__table__.update().values(claimed_by="other"))
                    taken["done"] = True
        return granted

    monkeypatch.setattr(RateLimiter, "acquire", acquire_then_lose_the_claim)
    result = harness.deliver()
    assert result.success and taken["done"]
    assert register_posts(kroton) == 0
    sub = harness.subscription(1)
    assert sub.claimed_by == "other"  # the other run's claim is untouched
    assert sub.sending_since is None  # nothing left, so no marker
    assert op_metadata(result, "register")["outcomes"] == {"claim_lost": 1}


def test_a_bug_building_one_payload_does_not_stop_the_others(
    kroton: KrotonSandbox, anubis_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anubis_dagster.integrations.kroton.adapter import KrotonAdapter

    harness = Harness(anubis_env)
    harness.ingest([make_order(i) for i in (1, 2, 3)])
    build = KrotonAdapter.build_payload

    def broken_for_two(self, subscription):  # type: ignore[no-untyped-def]
        if subscription.order_id == 2:
            raise KeyError("a bug")
        return build(self, subscription)

    monkeypatch.setattr(KrotonAdapter, "build_payload", broken_for_two)
    result = harness.deliver()
    assert result.success
    statuses = harness.statuses()
    assert statuses[2] == "to_register" and harness.subscription(2).attempts == 1
    assert statuses[1] != "to_register" and statuses[3] != "to_register"
