"""The only code that changes a subscription's status, and the writer of its event rows.

Every change goes through `transition`, which asks `core.states` whether the move is legal,
updates the row (and whether it still holds the student's CPF) and writes one
`subscription_events` row of kind `transition`. HTTP attempts are recorded by `record_attempt`,
one row per request, so attempt rows and requests received by the IES match one for one.
Everything stored in an event is masked first (`mask_data`/`mask_text`): events are read by
people. Masking redacts secrets by value before anything else, so a credential that travels in
a request (Kroton's subscription key as the token `scope` form field, the OneTrust
collection-point token in the consent body) or is quoted back in an answer or an error is never
stored; `db.redact_writes` catches any other write as a last resort.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from anubis_dagster.core.masking import mask_data, mask_text
from anubis_dagster.core.names import first_name_key
from anubis_dagster.core.orders import get_path
from anubis_dagster.core.states import Status, check_transition, holds_cpf
from anubis_dagster.db.models import Subscription, SubscriptionEvent, utcnow

TRANSITION = "transition"
ATTEMPT = "attempt"
RETRY = "retry"
NOTE = "note"


def _event(
    session: Session,
    *,
    subscription: Subscription | None,
    integration_id: int | None,
    kind: str,
    status: str | None,
    operation: str,
    run_id: str | None,
    error: str | None = None,
    request: Any = None,
    response: Any = None,
    http_status: int | None = None,
    duration_ms: float | None = None,
    outcome: str | None = None,
) -> SubscriptionEvent:
    event = SubscriptionEvent(
        subscription_id=subscription.id if subscription is not None else None,
        integration_id=integration_id,
        kind=kind,
        status=status,
        operation_name=operation,
        error_message=mask_text(error) if error else None,
        request=mask_data(request) if request is not None else None,
        response=mask_data(response) if response is not None else None,
        http_status=http_status,
        duration_ms=duration_ms,
        outcome=outcome,
        dagster_run_id=run_id,
        model="Subscription",
    )
    session.add(event)
    return event


def create_subscription(
    session: Session,
    *,
    integration_id: int,
    integration_filter_id: int | None,
    order: dict[str, Any],
    order_id: int,
    cpf: str | None,
    status: Status,
    operation: str,
    run_id: str | None,
    error: str | None = None,
    response: Any = None,
    order_updated_at: datetime | None = None,
    scheduled_to: datetime | None = None,
) -> Subscription:
    """Create a subscription in one of the initial statuses, with its decision event."""
    check_transition(None, status)
    subscription = Subscription(
        integration_id=integration_id,
        integration_filter_id=integration_filter_id,
        order_id=order_id,
        origin=order.get("origin") if isinstance(order.get("origin"), str) else None,
        cpf=cpf or None,
        payload=order,
        ies_data={},
        first_name=first_name_key(get_path(order, "base_user.full_name")),
        gender=_gender(get_path(order, "base_user.gender")),
        status=status.value,
        active_cpf=cpf if cpf and holds_cpf(status) else None,
        attempts=0,
        last_error=mask_text(error) if error else None,
        order_updated_at=order_updated_at,
        scheduled_to=scheduled_to,
    )
    session.add(subscription)
    session.flush()  # assigns the id the event refers to
    _event(
        session,
        subscription=subscription,
        integration_id=integration_id,
        kind=TRANSITION,
        status=status.value,
        operation=operation,
        run_id=run_id,
        error=error,
        response=response,
        outcome=status.value,
    )
    return subscription


def _gender(value: object) -> str | None:
    text = str(value or "").strip().upper()[:1]
    return text if text in ("M", "F") else None


def transition(
    session: Session,
    subscription: Subscription,
    target: Status,
    *,
    operation: str,
    run_id: str | None = None,
    error: str | None = None,
    request: Any = None,
    response: Any = None,
    requeue: bool = False,
) -> SubscriptionEvent:
    """Move `subscription` to `target` (raises `IllegalTransition` if the machine forbids it)."""
    current = Status(subscription.status)
    check_transition(current, target, requeue=requeue)
    subscription.status = target.value
    subscription.active_cpf = subscription.cpf if holds_cpf(target) else None
    subscription.updated_at = utcnow()
    if error is not None:
        subscription.last_error = mask_text(error)
    return _event(
        session,
        subscription=subscription,
        integration_id=subscription.integration_id,
        kind=TRANSITION,
        status=target.value,
        operation=operation,
        run_id=run_id,
        error=error,
        request=request,
        response=response,
        outcome=target.value,
    )


def record_attempt(
    session: Session,
    *,
    subscription: Subscription | None,
    integration_id: int | None,
    operation: str,
    outcome: str,
    run_id: str | None,
    http_status: int | None = None,
    duration_ms: float | None = None,
    request: Any = None,
    response: Any = None,
    error: str | None = None,
) -> SubscriptionEvent:
    """One outbound HTTP request and what came of it (`outcome`: ok, http_4xx, timeout, …)."""
    return _event(
        session,
        subscription=subscription,
        integration_id=integration_id,
        kind=ATTEMPT,
        status=subscription.status if subscription is not None else None,
        operation=operation,
        run_id=run_id,
        error=error,
        request=request,
        response=response,
        http_status=http_status,
        duration_ms=duration_ms,
        outcome=outcome,
    )


def record_note(
    session: Session,
    subscription: Subscription,
    *,
    kind: str,
    operation: str,
    run_id: str | None,
    error: str | None = None,
    response: Any = None,
    outcome: str | None = None,
) -> SubscriptionEvent:
    """An event that changes no status: a scheduled retry (`kind=retry`) or a remark (`note`)."""
    return _event(
        session,
        subscription=subscription,
        integration_id=subscription.integration_id,
        kind=kind,
        status=subscription.status,
        operation=operation,
        run_id=run_id,
        error=error,
        response=response,
        outcome=outcome,
    )


def finish_attempt(
    session: Session,
    attempt_id: int,
    *,
    outcome: str,
    http_status: int | None,
    duration_ms: float | None,
    response: Any = None,
    error: str | None = None,
) -> None:
    """Complete an attempt row written before its request left (`record_attempt`)."""
    event = session.get(SubscriptionEvent, attempt_id)
    if event is None:  # deleted meanwhile (retention): nothing to complete
        return
    event.outcome = outcome
    event.http_status = http_status
    event.duration_ms = duration_ms
    event.response = mask_data(response) if response is not None else None
    event.error_message = mask_text(error) if error else None
