"""Where a requeue resumes (issue 23), on the plain functions: a registration goes back to the
step whose result the partner may have lost (Estácio: the LGPD consent), never while a send may
still be unanswered; the reasons a subscription cannot be requeued."""

from __future__ import annotations

from datetime import UTC, datetime

from anubis_dagster.core.states import Status
from anubis_dagster.db.models import Subscription
from anubis_dagster.delivery.requeue import redo_earlier_step, why_not_requeueable
from anubis_dagster.integrations.base import adapter_class

ESTACIO, KROTON = adapter_class("estacio"), adapter_class("kroton")


def subscription(status: str, **fields: object) -> Subscription:
    return Subscription(integration_id=1, order_id=1, payload={}, status=status, **fields)


def test_an_estacio_registration_resumes_at_the_consent() -> None:
    refused = subscription("register_failed")
    assert redo_earlier_step(ESTACIO, refused, Status.TO_REGISTER) is Status.TO_SYNC_LGPD
    # a consent that failed resumes at the consent anyway; a Kroton registration at itself
    assert redo_earlier_step(ESTACIO, refused, Status.TO_SYNC_LGPD) is Status.TO_SYNC_LGPD
    assert redo_earlier_step(KROTON, refused, Status.TO_REGISTER) is Status.TO_REGISTER
    assert redo_earlier_step(None, refused, Status.TO_REGISTER) is Status.TO_REGISTER


def test_a_send_that_may_have_arrived_is_settled_by_the_resend_first() -> None:
    held = subscription("unknown", sending_since=datetime(2026, 11, 20, tzinfo=UTC))
    assert redo_earlier_step(ESTACIO, held, Status.TO_REGISTER) is Status.TO_REGISTER


def test_why_a_subscription_cannot_be_requeued() -> None:
    assert why_not_requeueable(subscription("failed"), Status.TO_REGISTER) is None
    assert why_not_requeueable(subscription("registered"), Status.TO_REGISTER) == (
        "status registered is not requeueable"
    )
    assert "takeover" in (why_not_requeueable(subscription("shadowed"), None) or "")
    assert why_not_requeueable(subscription("failed"), None) == (
        "no step to resume at (it failed after registering)"
    )
    erased = subscription("failed", anonymized_at=datetime(2026, 11, 20, tzinfo=UTC))
    assert why_not_requeueable(erased, Status.TO_REGISTER) == (
        "personal data removed by retention (LGPD)"
    )
    legacy = subscription("failed", legacy_status="error")
    assert "legacy service" in (why_not_requeueable(legacy, Status.TO_REGISTER) or "")
