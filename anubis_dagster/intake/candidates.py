"""The values intake's steps hand each other: an order's document, read and scanned once
(`load_json`, `parse_payload`, `Document`), one `Candidate` per integration the order is routed
to, and the `Decision` made of each (rows ready to write). No database: plain values shared by
the batch, decide, write and quarantine modules."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson

from anubis_dagster.core.order_document import (
    Problem,
    has_unstorable_values,
    long_number_in,
    plain_json_text,
    scan_document,
    storable_copy,
    storable_order,
)
from anubis_dagster.core.orders import digits, get_path
from anubis_dagster.core.states import Status
from anubis_dagster.core.validation import UsedFields, validate_order
from anubis_dagster.intake.orders_source import OrderRow
from anubis_dagster.intake.routes import Route


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(text: str | bytes | bytearray) -> Any:
    """`json.loads(text)`, refusing NaN and Infinity, from orjson where it gives the same answer
    (most orders, in half the time). orjson refuses some documents json reads (lone surrogates,
    1e400, nesting beyond 1024) and reads integers beyond 64 bits as floats: those documents,
    and any with 19 digits in a row, are read by json, so validation sees what json sees."""
    if not long_number_in(text):  # orjson might read it as a float where json reads an int
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text, parse_constant=_reject_constant)


def parse_payload(payload: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The order document of a row, or None and why it cannot be read. The orders source hands
    over text (a json column read as text, or a text column holding JSON) or, from tests and
    tools, an already parsed document."""
    if isinstance(payload, str | bytes | bytearray):
        try:
            payload = load_json(payload)
        except RecursionError:
            return None, "order payload is nested too deeply to read"
        except ValueError:  # includes UnicodeDecodeError and NaN/Infinity
            return None, "order payload is not valid JSON"
    if not isinstance(payload, dict):
        return None, "order payload is not a JSON object"
    return payload, None


def _cpf(order: Any) -> str:
    """The CPF's digits, only when the CPF is text (never the digits of `str(list)`)."""
    value = get_path(order, "base_user.cpf")
    return digits(value) if isinstance(value, str) and len(value) <= 20 else ""


@dataclass(frozen=True)
class Known:
    """What intake needs of a subscription that exists: is it a refused order to look at again?"""

    id: int
    status: str
    order_updated_at: datetime | None


class Document:
    """What one order's document holds for every integration it goes to, found once: whether
    its text is plain (`plain_json_text`: nothing for the whole-document scan to find), else
    the scan's problems, and the storable copy of a valid order with unstorable values."""

    __slots__ = ("_cpf", "_scan", "_storable", "order", "payload")

    def __init__(self, order: dict[str, Any], payload: Any) -> None:
        self.order = order
        self.payload = payload
        self._cpf: str | None = None
        self._scan: list[Problem] | None = None
        self._storable: dict[str, Any] | None = None

    @property
    def cpf(self) -> str:
        """`_cpf` of the order, found once: every integration and step asks for it."""
        if self._cpf is None:
            self._cpf = _cpf(self.order)
        return self._cpf

    @property
    def scan(self) -> list[Problem]:
        """The whole-document scan's problems (none for a plain text, not scanned)."""
        if self._scan is None:
            plain = plain_json_text(self.payload)
            self._scan = [] if plain else scan_document(self.order)
        return self._scan

    def storable(self) -> dict[str, Any]:
        """The document a valid subscription keeps: the order itself, unless values in fields
        nobody reads cannot be stored as they are (`storable_order`)."""
        if not has_unstorable_values(self.scan):
            return self.order
        if self._storable is None:
            self._storable = storable_order(self.order)
        return self._storable


@dataclass(eq=False)  # compared by identity: one order may come twice
class Candidate:
    """One order routed to one integration: a subscription to create, look at again or leave."""

    row: OrderRow
    document: Document
    route: Route
    filter_id: int
    fields: UsedFields  # what is validated: the integration's fields (`Route.fields`)
    _problems: list[Problem] | None = None
    _stored: dict[str, Any] | None = None

    @property
    def order(self) -> dict[str, Any]:
        return self.document.order

    @property
    def key(self) -> tuple[int, int]:
        return (self.route.integration_id, self.row.id)

    def problems(self, today: date) -> list[Problem]:
        """The order's problems for this integration, found once: a chunk decided again after
        a refused row does not validate its orders again."""
        if self._problems is None:
            scan = self.document.scan  # [] for a plain text: nothing to scan
            self._problems = validate_order(
                self.document.order, today=today, fields=self.fields, plain=not scan, scan=scan
            )
        return self._problems

    def known_problems(self) -> list[Problem]:
        """The problems found by `problems` (none if it was not called)."""
        return self._problems or []

    def stored_order(self, today: date) -> dict[str, Any]:
        """The document the subscription keeps: the order (storable: `Document.storable`), or
        a bounded copy of an invalid one (any backend stores it; the original is at the
        source). Made once, like `problems`."""
        if self._stored is None:
            problems = self.problems(today)
            self._stored = storable_copy(self.order) if problems else self.document.storable()
        return self._stored


@dataclass
class Decision:
    """What becomes of a candidate, as rows ready for `write_rows` (none when unchanged)."""

    candidate: Candidate
    outcome: str  # created | revalidated | unchanged
    status: str
    known: Known | None = None  # the subscription after the write
    holds_cpf: str | None = None
    insert: dict[str, Any] | None = None
    update: dict[str, Any] | None = None
    event: dict[str, Any] | None = None


def needs_revalidation(existing: Known, updated_at: datetime, route: Route) -> bool:
    """Whether a known order is decided again: refused, and corrected at the source since; or
    recorded before its go-live point, which no longer applies (taken over)."""
    if existing.status == Status.BEFORE_GO_LIVE.value:  # the point no longer applies: taken over
        return route.go_live_at is None or updated_at >= route.go_live_at
    if existing.status != Status.INVALID.value:
        return False
    return existing.order_updated_at is None or updated_at > existing.order_updated_at
