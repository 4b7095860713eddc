"""The only code that changes a subscription's status, and the writer of its event rows.

Every change goes through `transition`, which asks `core.states` whether the move is legal,
updates the row (and whether it still holds the student's CPF) and writes one
`subscription_events` row of kind `transition`. HTTP attempts are recorded by `record_attempt`,
one row per request, so attempt rows and requests received by the IES match one for one.
What a row says is one `EventFields` value, built by the function that knows it and masked
once (`EventFields.values`): events are read by people. Masking redacts secrets by value
before anything else, so a credential that travels in a request (Kroton's subscription key as
the token `scope` form field, the OneTrust collection-point token in the consent body) or is
quoted back in an answer or an error is never stored; `db.redact_writes` catches any other
write as a last resort.

Intake creates subscriptions by the thousand, so the same rules also come as column values
(`subscription_values`, `event_values`, `transition_values`) that `db.bulk_write.write_rows`
writes with a few statements per batch instead of one ORM flush per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from anubis_dagster.core.events import event_type
from anubis_dagster.core.masking import mask_data, mask_text
from anubis_dagster.core.names import first_name_key
from anubis_dagster.core.offer import offer_columns
from anubis_dagster.core.orders import get_path
from anubis_dagster.core.states import Status, check_transition, holds_cpf
from anubis_dagster.db import outbox

# the bulk writer's names, imported from here by callers older than `db.bulk_write`
from anubis_dagster.db.bulk_write import RefusedRow as RefusedRow
from anubis_dagster.db.bulk_write import RenderedJson as RenderedJson
from anubis_dagster.db.bulk_write import allocate_subscription_ids as allocate_subscription_ids
from anubis_dagster.db.bulk_write import refused_row as refused_row
from anubis_dagster.db.bulk_write import write_rows as write_rows
from anubis_dagster.db.models import Subscription, SubscriptionEvent, utcnow

TRANSITION = "transition"
ATTEMPT = "attempt"
RETRY = "retry"
NOTE = "note"


@dataclass(frozen=True, slots=True)
class EventFields:
    """What one `subscription_events` row says besides whose it is (subscription and
    integration): its kind, the step that wrote it, the status and outcome, and what was sent
    and answered. One value instead of ten keywords passed from function to function."""

    kind: str
    operation: str
    run_id: str | None
    status: str | None = None
    outcome: str | None = None
    error: str | None = None
    request: Any = None
    response: Any = None
    http_status: int | None = None
    duration_ms: float | None = None

    def values(self, subscription_id: int | None, integration_id: int | None) -> dict[str, Any]:
        """Column values of the row, masked (events are read by people)."""
        return event_values(
            subscription_id=subscription_id,
            integration_id=integration_id,
            kind=self.kind,
            status=self.status,
            operation=self.operation,
            run_id=self.run_id,
            error=self.error,
            request=self.request,
            response=self.response,
            http_status=self.http_status,
            duration_ms=self.duration_ms,
            outcome=self.outcome,
        )


def event_values(
    *,
    subscription_id: int | None,
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
) -> dict[str, Any]:
    """Column values of one `subscription_events` row, masked (events are read by people):
    what `EventFields.values` returns, as keywords for the bulk paths (intake's decisions,
    by the thousand), which a value per row would slow down."""
    return {
        "subscription_id": subscription_id,
        "integration_id": integration_id,
        "kind": kind,
        "status": status,
        "operation_name": operation,
        "error_message": mask_text(error) if error else None,
        "request": mask_data(request) if request is not None else None,
        "response": mask_data(response) if response is not None else None,
        "http_status": http_status,
        "duration_ms": duration_ms,
        "outcome": outcome,
        "dagster_run_id": run_id,
        "model": "Subscription",
    }


def _event(
    session: Session,
    subscription: Subscription | None,
    integration_id: int | None,
    fields: EventFields,
) -> SubscriptionEvent:
    subscription_id = subscription.id if subscription is not None else None
    event = SubscriptionEvent(**fields.values(subscription_id, integration_id))
    session.add(event)
    return event


def subscription_values(
    *,
    integration_id: int,
    integration_filter_id: int | None,
    order: dict[str, Any],
    order_id: int,
    cpf: str | None,
    status: Status,
    error: str | None = None,
    order_updated_at: datetime | None = None,
    scheduled_to: datetime | None = None,
) -> dict[str, Any]:
    """Column values of a new subscription in one of the initial statuses (raises
    `IllegalTransition` for any other)."""
    check_transition(None, status)
    return {
        "integration_id": integration_id,
        "integration_filter_id": integration_filter_id,
        "order_id": order_id,
        "origin": order.get("origin") if isinstance(order.get("origin"), str) else None,
        "cpf": cpf or None,
        "payload": order,
        **offer_columns(order),  # the report's conversion columns (core/offer.py)
        "ies_data": {},
        "first_name": first_name_key(get_path(order, "base_user.full_name")),
        "gender": _gender(get_path(order, "base_user.gender")),
        "status": status.value,
        "active_cpf": cpf if cpf and holds_cpf(status) else None,
        "attempts": 0,
        "last_error": mask_text(error) if error else None,
        "order_updated_at": order_updated_at,
        "scheduled_to": scheduled_to,
    }


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
    subscription = Subscription(
        **subscription_values(
            integration_id=integration_id,
            integration_filter_id=integration_filter_id,
            order=order,
            order_id=order_id,
            cpf=cpf,
            status=status,
            error=error,
            order_updated_at=order_updated_at,
            scheduled_to=scheduled_to,
        )
    )
    session.add(subscription)
    session.flush()  # assigns the id the event refers to
    outbox.add_event(session, subscription, previous_status=None, operation=operation)
    fields = EventFields(
        kind=TRANSITION,
        operation=operation,
        run_id=run_id,
        status=status.value,
        outcome=status.value,
        error=error,
        response=response,
    )
    _event(session, subscription, integration_id, fields)
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
    """Move `subscription` to `target` (raises `IllegalTransition` if the machine forbids it);
    a status other services hear about also writes its outbox row (`core.events`)."""
    previous = subscription.status
    for name, value in transition_values(
        subscription.status, target, cpf=subscription.cpf, error=error, requeue=requeue
    ).items():
        setattr(subscription, name, value)
    outbox.add_event(session, subscription, previous_status=previous, operation=operation)
    fields = EventFields(
        kind=TRANSITION,
        operation=operation,
        run_id=run_id,
        status=target.value,
        outcome=target.value,
        error=error,
        request=request,
        response=response,
    )
    return _event(session, subscription, subscription.integration_id, fields)


def transition_values(
    current: str,
    target: Status,
    *,
    cpf: str | None,
    error: str | None,
    requeue: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The columns a move from `current` to `target` changes (raises `IllegalTransition` if
    the machine forbids it); the event row is the caller's, from `event_values`."""
    check_transition(Status(current), target, requeue=requeue)
    values: dict[str, Any] = {
        "status": target.value,
        "active_cpf": cpf if holds_cpf(target) else None,
        "updated_at": now or utcnow(),
    }
    if error is not None:
        values["last_error"] = mask_text(error)
    return values


def move_many(
    session: Session,
    ids: Sequence[int],
    target: Status,
    *,
    integration_id: int,
    note: str,
    operation: str,
    run_id: str | None,
    now: datetime,
) -> None:
    """Move the subscriptions `ids` of one integration to `target` with a few statements, each
    with `note` as its last error and one transition event: the legacy side's bulk moves (held
    back by a go-live point, superseded by the legacy's registration), too many for one
    `transition` each. Only to a status that holds no CPF and publishes no event: this writes
    neither `active_cpf` nor outbox rows, so any other target is refused."""
    if holds_cpf(target) or event_type(target.value) is not None:
        raise ValueError(f"move_many cannot move to {target.value}: it holds a CPF or publishes")
    for start in range(0, len(ids), 1000):
        session.execute(
            update(Subscription)
            .where(Subscription.id.in_(ids[start : start + 1000]))
            .values(
                status=target.value,
                active_cpf=None,
                scheduled_to=None,
                last_error=note,
                updated_at=now,
            )
        )
    fields = EventFields(
        kind=TRANSITION,
        operation=operation,
        run_id=run_id,
        status=target.value,
        outcome=target.value,
        error=note,
    )
    events = [
        fields.values(sid, integration_id) | {"created_at": now, "updated_at": now} for sid in ids
    ]
    if events:
        session.execute(insert(SubscriptionEvent), events)


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
    fields = EventFields(
        kind=ATTEMPT,
        operation=operation,
        run_id=run_id,
        status=subscription.status if subscription is not None else None,
        outcome=outcome,
        error=error,
        request=request,
        response=response,
        http_status=http_status,
        duration_ms=duration_ms,
    )
    return _event(session, subscription, integration_id, fields)


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
    fields = EventFields(
        kind=kind,
        operation=operation,
        run_id=run_id,
        status=subscription.status,
        outcome=outcome,
        error=error,
        response=response,
    )
    return _event(session, subscription, subscription.integration_id, fields)


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
