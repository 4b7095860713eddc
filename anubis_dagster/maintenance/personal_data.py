"""Where personal data lives in the app DB: the one registry that retention, erasure and export
read (issue 22).

`subscriptions` is the root: it holds the order (`payload`), the CPF, the name and the
adapter's working data, and its status decides when its data may go (`maintenance/pii.py`). Every
other place that can hold a student's personal data, or a partner's free text about them, is a
`Place` in `PLACES`: its table, the personal columns, the values that anonymise them, which of
its rows still hold data, their age, and how to find one person's rows. Retention scrubs each
place's rows older than the cutoff; `anubis privacy erase` scrubs the person's rows of every
place; `anubis privacy export` dumps them; the erase test scans every text column of the app DB.

**A new table that stores personal data (a legacy import, a shadow comparison's "would send")
is one more `Place` appended to `PLACES`**, nothing else: retention, erasure and export pick it
up. Its `of_subject` finds the person's rows by subscription id, order id or CPF
(`Subject`; `cpf_is(Model.cpf)` for a table matched on CPF), and its `aged` says when a row is
old. The erase test scans every text and JSON column of every table for the student: a table
left out of `PLACES` fails it once that test also writes the student there. A table whose rows
are only ever appended (its `age` grows with its id) may name a `cursor`, so retention walks it
from a saved position instead of from the start every week.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, cast, false, null, or_
from sqlalchemy.sql.elements import ColumnElement

from anubis_dagster.db.models import (
    Base,
    FollowUp,
    IntakeQuarantine,
    Subscription,
    SubscriptionEvent,
)

#: what replaces a free text that may not be NULL (the quarantine's reason)
REMOVED = "(removed: personal data retention or erasure)"


@dataclass(frozen=True)
class Subject:
    """One person as erasure and export find them: their CPF (None when only ids are known and
    the rows no longer hold one), their subscriptions and their orders."""

    cpf: str | None
    subscription_ids: tuple[int, ...]
    order_ids: tuple[int, ...]


@dataclass(frozen=True)
class Place:
    """One table (or set of columns) where personal data lands, besides `subscriptions`."""

    name: str  # the key in reports and exports
    model: type[Base]  # its primary key must be `id`
    columns: tuple[str, ...]  # the personal columns
    scrub: Mapping[str, Any]  # column → the value that anonymises it
    holds_data: Callable[[], ColumnElement[bool]]  # rows not scrubbed yet (idempotence)
    aged: Callable[[datetime], ColumnElement[bool]]  # rows older than the cutoff
    of_subject: Callable[[Subject], ColumnElement[bool]]  # one person's rows
    #: rows the scrub rewrites, when broader than `holds_data` (e.g. a JSON `null` that an ORM
    #: insert of None wrote: no data to count, but made SQL NULL like the rest)
    rewrites: Callable[[], ColumnElement[bool]] | None = None
    #: the column that names the row's subscription (or its order): a dry run by age leaves
    #: out the rows whose subscription the subscription passes count already
    subscription_id: Callable[[], Any] | None = None
    order_id: Callable[[], Any] | None = None
    #: `updated_at` is kept as it was when a row is scrubbed (it dates the last real change)
    keeps_updated_at: bool = True
    #: append-only tables: retention resumes from this `cursors` row and stops at a young row
    cursor: str | None = None


def cpf_is(column: Any) -> Callable[[Subject], ColumnElement[bool]]:
    """`of_subject` for a table that holds the CPF itself (e.g. a legacy import, matched on
    CPF): a subject known only by ids (no CPF left) matches none of its rows, never the rows
    whose CPF is NULL."""
    return lambda subject: column == subject.cpf if subject.cpf else false()


def _json_holds(column: Any) -> ColumnElement[bool]:
    """A JSON value that is there: not SQL NULL, and not the JSON `null` an ORM insert of None
    writes."""
    return and_(column.is_not(None), cast(column, String) != "null")


def _events_hold_data() -> ColumnElement[bool]:
    e = SubscriptionEvent
    return or_(_json_holds(e.request), _json_holds(e.response), e.error_message.is_not(None))


PLACES: tuple[Place, ...] = (
    # every attempt's masked request and response, and the partner's error text (masking has
    # gaps: a name in quotes, a phone of 8 digits), of any subscription in any status
    Place(
        name="subscription_events",
        model=SubscriptionEvent,
        columns=("request", "response", "error_message"),
        scrub={"request": None, "response": None, "error_message": None},
        holds_data=_events_hold_data,
        rewrites=lambda: or_(
            SubscriptionEvent.request.is_not(None),
            SubscriptionEvent.response.is_not(None),
            SubscriptionEvent.error_message.is_not(None),
        ),
        aged=lambda cutoff: SubscriptionEvent.created_at < cutoff,
        of_subject=lambda subject: SubscriptionEvent.subscription_id.in_(subject.subscription_ids),
        cursor="retention:events:v2",  # v1 only dropped request/response
        subscription_id=lambda: SubscriptionEvent.subscription_id,
    ),
    # the partner's last answer about a registered student, whatever the subscription's status
    Place(
        name="follow_ups",
        model=FollowUp,
        columns=("source",),
        scrub={"source": {}},
        holds_data=lambda: cast(FollowUp.source, String) != "{}",
        aged=lambda cutoff: FollowUp.updated_at < cutoff,
        of_subject=lambda subject: FollowUp.subscription_id.in_(subject.subscription_ids),
        subscription_id=lambda: FollowUp.subscription_id,
    ),
    # the last (masked) error of a subscription, also of one still open but idle
    Place(
        name="subscriptions.last_error",
        model=Subscription,
        columns=("last_error",),
        scrub={"last_error": None},
        holds_data=lambda: Subscription.last_error.is_not(None),
        aged=lambda cutoff: Subscription.updated_at < cutoff,
        of_subject=lambda subject: Subscription.id.in_(subject.subscription_ids),
        subscription_id=lambda: Subscription.id,
    ),
    # why intake could not process an order (masked, but it quotes the order's values)
    Place(
        name="intake_quarantine",
        model=IntakeQuarantine,
        columns=("reason",),
        scrub={"reason": REMOVED},
        holds_data=lambda: IntakeQuarantine.reason != REMOVED,
        aged=lambda cutoff: IntakeQuarantine.updated_at < cutoff,
        of_subject=lambda subject: IntakeQuarantine.order_id.in_(subject.order_ids),
        order_id=lambda: IntakeQuarantine.order_id,
    ),
)


def place(name: str) -> Place:
    return next(p for p in PLACES if p.name == name)


def scrub_values(p: Place) -> dict[str, Any]:
    """The UPDATE's values: the scrub (None as SQL NULL, not JSON `null`), and `updated_at`
    left as it was."""
    values: dict[str, Any] = {k: null() if v is None else v for k, v in p.scrub.items()}
    if p.keeps_updated_at and hasattr(p.model, "updated_at"):
        values["updated_at"] = p.model.updated_at
    return values


def pending(p: Place, where: ColumnElement[bool]) -> ColumnElement[bool]:
    return and_(where, p.holds_data())


def row_dict(row: Any) -> dict[str, Any]:
    """Every column of an ORM row, for an export."""
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}
