"""Which status changes the rest of the company hears about, and what an event says.

`EVENT_TYPES` is the one switch: a status listed here makes `db.transitions` write an outbox
row in the same transaction as the change (creation included, so a status a subscription is
born in, such as legacy `imported`, is covered too); a status not listed produces no event.
Statuses are keyed by their text so that a status added elsewhere (`expired`, `shadowed`…) is
one line here, and a status this branch does not know yet costs nothing.

Creation in an intake status (`to_sync`, `to_register`, `invalid`, `duplicate`) is not an
event: the order comes from the marketplace's own database, so its owner already knows it
exists, and an invalid order is a data problem the ops team fixes at the source (the Launchpad
and the digest show it). What consumers act on is the outcome at the university.

An event carries ids, statuses, the step that decided (`reason`) and times: no CPF, name,
e-mail, phone or free text (an error message, even masked, may quote a partner's prose).
Consumers join on `order_id`, the marketplace's own order, which already leads them to the
student; a hash of the CPF would only add an identifier linkable across systems.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: bumped when a field is removed or changes meaning (consumers read `schema_version`);
#: adding an optional field keeps the version
SCHEMA_VERSION = 1

#: status (its text) → event type; the lead extends this in one line per new status
EVENT_TYPES: dict[str, str] = {
    "registered": "subscription.sent",  # accepted by the university (seed 002's topic)
    "register_failed": "subscription.refused",  # the university refused the registration
    "empty_course": "subscription.refused",  # no offer at the university for the course
    "failed": "subscription.dead_lettered",  # gave up after retries; an operator looks
    "unknown": "subscription.held_for_review",  # may have reached the partner: held
    "enrolled": "subscription.enrolled",
    "dropped": "subscription.dropped",
    "erased": "subscription.erased",  # personal data erased on request (LGPD)
}


#: a subscription created by the legacy import (`legacy/importer.py`), whatever its status: the
#: legacy service sent it, so "sent" would announce a send Anubis never made
IMPORTED = "subscription.imported"


def event_type(status: str, *, imported: bool = False) -> str | None:
    """The event a move into `status` publishes, or None when it publishes none; a row the
    legacy import creates publishes `subscription.imported`."""
    return IMPORTED if imported else EVENT_TYPES.get(str(status))


def iso(moment: datetime) -> str:
    """UTC, ISO 8601 with microseconds and `Z` (what the schemas' `date-time` expects)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class StatusChange:
    """What an event says about one status change, besides its id, type and time: ids, the
    two statuses, the step that decided (`reason`) and the partner's id; no personal data."""

    subscription_id: int
    order_id: int
    integration_id: int
    origin: str | None
    status: str
    previous_status: str | None
    reason: str
    partner_id: str | None


def event_payload(
    change: StatusChange, *, event_id: str, type_: str, occurred_at: datetime
) -> dict[str, Any]:
    """The stored part of an event (the publisher adds `integration` and `sequence`)."""
    return {
        "event_id": event_id,
        "event_type": type_,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": iso(occurred_at),
        "subscription_id": int(change.subscription_id),
        "order_id": int(change.order_id),
        "integration_id": int(change.integration_id),
        "origin": change.origin,
        "status": str(change.status),
        "previous_status": (
            str(change.previous_status) if change.previous_status is not None else None
        ),
        "reason": change.reason,
        "partner_id": change.partner_id,
    }
