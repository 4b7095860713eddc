# 1019 lines, over the house's ~400 for now: the set-based intake; decide / write / quarantine are
# its seams (`intake/{decide,write,quarantine}.py`, issue 24).
"""Intake: paid orders → validated, routed, idempotent subscriptions.

Plain Python (no Dagster) so the rules are tested directly; `intake.jobs` is a thin wrapper.
For each order: route it through the integrations' filters; for each integration it matches,
create the subscription once (unique on integration and order) in the adapter's first status,
or `invalid` with field-level reasons, or `duplicate` when another active subscription already
holds the student's CPF for that integration. Every decision writes an event row. An order
that matches no integration is counted as unrouted.

Set-based: a chunk is read from the database with three lookups (subscriptions that exist, CPFs
held, open quarantine rows), decided in Python, and written with a few statements
(`transitions.write_rows`: COPY on PostgreSQL, `executemany` on SQLite), so the cost per
order is Python's, not a round trip's. The decisions are written `WRITE_UNIT` at a time, each
unit in a savepoint; if the database refuses a unit, it is bisected (each half in its own
savepoint, halves that pass are kept) down to the one order it refuses, which is quarantined,
and the orders after it are decided again (one of them may have been waiting on its CPF;
their validation is not repeated). One poison order costs about 2·log2(WRITE_UNIT) extra
statements and its unit written twice, not a savepoint per order for everybody.

Poison orders are quarantined, never allowed to stop intake: an order whose payload is not a
JSON object, or whose write the database refuses (any error), is recorded in `intake_quarantine`
with its reason, counted in the report, and the batch (and the intake watermark) moves past it.
Only when even the quarantine row cannot be written (the database is down) does the order count
as an error, which fails the run and leaves the watermark before it.
"""

from __future__ import annotations

import gc
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, any_, bindparam, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from anubis_dagster.core.masking import mask_cpf, mask_text
from anubis_dagster.core.offer import offer_columns
from anubis_dagster.core.orders import ORIGINS, digits, get_path
from anubis_dagster.core.routing import filter_fields, first_match
from anubis_dagster.core.states import Status
from anubis_dagster.core.validation import (
    INTAKE_FIELDS,
    Problem,
    UsedFields,
    has_unstorable_values,
    long_number_in,
    plain_json_text,
    scan_document,
    storable_copy,
    storable_order,
    validate_order,
)
from anubis_dagster.db.models import (
    IntakeQuarantine,
    Integration,
    IntegrationFilter,
    Subscription,
    utcnow,
)
from anubis_dagster.db.statistics import refresh_if_stale
from anubis_dagster.db.transitions import (
    TRANSITION,
    RenderedJson,
    allocate_subscription_ids,
    event_values,
    refused_row,
    subscription_values,
    transition_values,
    write_rows,
)
from anubis_dagster.db.upsert import upsert
from anubis_dagster.intake.orders_source import OrderRow
from anubis_dagster.integrations.base import order_fields_for as adapter_order_fields

OPERATION = "intake"
#: decisions written per savepoint: a row the database refuses costs at most its unit written
#: again (and the unit's bisection), not the chunk; a clean chunk costs a few statements more
WRITE_UNIT = 200
UNREADABLE = "unreadable"
WRITE_FAILED = "write_failed"
REVALIDATED_NOTE = "order corrected at the source; validated again"
TAKEN_OVER_NOTE = "taken over by an operator: sent by Anubis although paid before the go-live point"
UNROUTED = "no integration filter matches the order"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """One enabled integration with its enabled filters, as intake needs it."""

    integration_id: int
    key: str
    initial_status: Status
    filters: tuple[tuple[int, Mapping[str, Any]], ...]
    #: orders before this point are recorded `before_go_live`, never sent (`legacy/go_live.py`);
    #: read again in each chunk's transaction (`_with_go_live`)
    go_live_at: datetime | None = None
    #: filter id → the order fields validated for an order routed through that filter: the
    #: adapter's, the filter's (what it matched on and its `required_fields`) and intake's own
    fields: Mapping[int, UsedFields] = field(default_factory=dict, compare=False)

    def fields_of(self, filter_id: int, filter_: Mapping[str, Any]) -> UsedFields:
        found = self.fields.get(filter_id)
        return found if found is not None else route_fields(UsedFields(), filter_)


def route_fields(adapter_fields: UsedFields, filter_: Mapping[str, Any]) -> UsedFields:
    """What is validated of an order routed through `filter_` to an integration whose adapter
    reads `adapter_fields`: those, what routing read to match it, and what intake reads."""
    read, required = filter_fields(filter_)
    return INTAKE_FIELDS | adapter_fields | UsedFields.of(read=read, required=required)


def load_routes(
    session: Session,
    initial_status_for: Callable[[str], Status],
    order_fields_for: Callable[[str], UsedFields] = adapter_order_fields,
) -> list[Route]:
    routes = []
    integrations = session.scalars(
        select(Integration).where(Integration.enabled.is_(True)).order_by(Integration.id)
    )
    for integration in integrations:
        filters = session.scalars(
            select(IntegrationFilter)
            .where(
                IntegrationFilter.integration_id == integration.id,
                IntegrationFilter.enabled.is_(True),
            )
            .order_by(IntegrationFilter.position)
        )
        pairs = tuple((f.id, f.filter) for f in filters)
        adapter_fields = order_fields_for(integration.type)
        routes.append(
            Route(
                integration_id=integration.id,
                key=integration.key,
                initial_status=initial_status_for(integration.type),
                filters=pairs,
                fields={i: route_fields(adapter_fields, f) for i, f in pairs},
            )
        )
    return routes


@dataclass
class IntakeReport:
    """What became of a batch; goes to the run's metadata and the summary alert."""

    orders: int = 0
    created: int = 0
    unchanged: int = 0
    revalidated: int = 0
    errors: int = 0
    by_outcome: Counter[str] = field(default_factory=Counter)  # "kroton/quero_bolsa/to_sync"
    unrouted: list[dict[str, Any]] = field(default_factory=list)  # order ids + reason, no PII
    error_orders: list[int] = field(default_factory=list)
    # poison orders recorded in `intake_quarantine`: order id, integration, kind, masked reason
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    # what the drift alarm (`core.drift`) reads: orders decided now (created or validated
    # again) per integration, those refused per (integration, reason), and unrouted orders
    # of the readable ones per reason. Reasons are field names and rule messages, no data.
    decided: Counter[str] = field(default_factory=Counter)
    invalid_by_reason: Counter[tuple[str, str]] = field(default_factory=Counter)
    readable: int = 0
    unrouted_by_reason: Counter[str] = field(default_factory=Counter)

    def count(self, integration: str, origin: Any, status: str) -> None:
        # a hostile origin (10 MB, personal data) never becomes a metadata key
        known = origin if isinstance(origin, str) and origin in ORIGINS else "unknown"
        self.by_outcome[f"{integration}/{known}/{status}"] += 1

    def merge(self, other: IntakeReport) -> None:
        self.orders += other.orders
        self.created += other.created
        self.unchanged += other.unchanged
        self.revalidated += other.revalidated
        self.errors += other.errors
        self.by_outcome.update(other.by_outcome)
        self.unrouted.extend(other.unrouted)
        self.error_orders.extend(other.error_orders)
        self.quarantined.extend(other.quarantined)
        self.decided.update(other.decided)
        self.invalid_by_reason.update(other.invalid_by_reason)
        self.readable += other.readable
        self.unrouted_by_reason.update(other.unrouted_by_reason)

    def reasons_json(self) -> dict[str, dict[str, int]]:
        """Invalid orders per integration and reason, and unrouted ones per reason (`unrouted`),
        most frequent first: the run's metadata."""
        out: dict[str, dict[str, int]] = {}
        for (integration, reason), count in self.invalid_by_reason.most_common():
            out.setdefault(integration, {})[reason] = count
        if self.unrouted_by_reason:
            out["unrouted"] = dict(self.unrouted_by_reason.most_common())
        return out


def _problems_text(problems: list[Problem]) -> str:
    # "field - message", not "field: message": masking reads "full_name: …" as a labelled name
    return "; ".join(f"{p.field} - {p.message}" for p in problems)


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


def _failure_reason(exc: Exception) -> str:
    """Why a write failed, for people: the error class and the first line of the driver's
    message (bound values are hidden by the engine), masked and cut short."""
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = detail[0] if detail else ""
    return mask_text(f"the database refused the write ({type(exc).__name__}): {first}")[:300]


@dataclass(frozen=True)
class _Known:
    """What intake needs of a subscription that exists: is it a refused order to look at again?"""

    id: int
    status: str
    order_updated_at: datetime | None


class _Document:
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
class _Candidate:
    """One order routed to one integration: a subscription to create, look at again or leave."""

    row: OrderRow
    document: _Document
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
        """The document the subscription keeps: the order (storable: `_Document.storable`), or
        a bounded copy of an invalid one (any backend stores it; the original is at the
        source). Made once, like `problems`."""
        if self._stored is None:
            problems = self.problems(today)
            self._stored = storable_copy(self.order) if problems else self.document.storable()
        return self._stored


@dataclass
class _Decision:
    """What becomes of a candidate, as rows ready for `write_rows` (none when unchanged)."""

    candidate: _Candidate
    outcome: str  # created | revalidated | unchanged
    status: str
    known: _Known | None = None  # the subscription after the write
    holds_cpf: str | None = None
    insert: dict[str, Any] | None = None
    update: dict[str, Any] | None = None
    event: dict[str, Any] | None = None


def _one_of(session: Session) -> Callable[[Any, list[Any]], ColumnElement[bool]]:
    """`column IN (values)` for a chunk's worth of values. PostgreSQL: `= ANY(array)`, one
    parameter; with 500 `IN` parameters psycopg spends longer parsing the statement in Python
    than the server spends answering it."""
    if session.get_bind().dialect.name != "postgresql":
        return lambda column, values: column.in_(values)
    return lambda column, values: (
        column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    )


class _Batch:
    """State shared by the orders of one chunk: what exists, which CPFs are held and which
    orders are in quarantine, fetched with one query each, then kept up to date in Python as
    decisions are written."""

    def __init__(
        self,
        session: Session,
        routes: list[Route],
        rows: list[OrderRow],
    ) -> None:
        self.session = session
        ids = [row.id for row in rows]
        integration_ids = [r.integration_id for r in routes]
        s = Subscription
        one_of = _one_of(session)
        self.existing: dict[tuple[int, int], _Known] = {
            (i, o): _Known(sid, status, stamp)
            for sid, i, o, status, stamp in session.execute(
                select(s.id, s.integration_id, s.order_id, s.status, s.order_updated_at).where(
                    s.integration_id.in_(integration_ids), one_of(s.order_id, ids)
                )
            )
        }
        self.integration_ids = integration_ids
        self.cpf_holders: dict[tuple[int, str], int] = {}  # see `load_cpf_holders`
        # open quarantine rows of these orders: resolved when the order now goes through
        q = IntakeQuarantine
        self.quarantine: dict[tuple[int, str], int] = {
            (order_id, key): qid
            for qid, order_id, key in session.execute(
                select(q.id, q.order_id, q.integration_key).where(
                    one_of(q.order_id, ids), q.resolved_at.is_(None)
                )
            )
        }
        self.resolved: set[tuple[int, str]] = set()
        self.rendered = RenderedJson()  # a part written again renders no document twice

    def load_cpf_holders(self, candidates: list[_Candidate]) -> None:
        """Which subscriptions hold the CPFs of the candidates that will be decided (new ones,
        and refused ones corrected at the source): one query, none on a re-ingest."""
        cpfs = {
            cpf
            for candidate in candidates
            if (known := self.existing.get(candidate.key)) is None
            or _needs_revalidation(known, candidate.row.updated_at, candidate.route)
            if len(cpf := candidate.document.cpf) == 11
        }
        if not cpfs:
            return
        s = Subscription
        held = self.session.execute(
            select(s.integration_id, s.active_cpf, s.id).where(
                s.integration_id.in_(self.integration_ids),
                _one_of(self.session)(s.active_cpf, sorted(cpfs)),
            )
        )
        self.cpf_holders = {(i, c): sid for i, c, sid in held if c is not None}

    def resolve(self, order_id: int, integration_key: str) -> None:
        if (order_id, integration_key) in self.quarantine:
            self.resolved.add((order_id, integration_key))

    def quarantined(self, order_id: int, integration_key: str) -> None:
        """Quarantined again in this chunk: its row stays open."""
        self.resolved.discard((order_id, integration_key))
        self.quarantine.pop((order_id, integration_key), None)

    def apply(self, decisions: list[_Decision], skipped: set[int]) -> None:
        """Decisions written: later orders of the chunk see their subscriptions and CPFs."""
        for d in decisions:
            key = d.candidate.key
            if d.known is not None and d.known.id not in skipped:
                self.existing[key] = d.known
                if d.holds_cpf:
                    self.cpf_holders[(key[0], d.holds_cpf)] = d.known.id
            self.resolve(d.candidate.row.id, d.candidate.route.key)

    def close(self) -> None:
        """Mark the quarantine rows of orders that went through as resolved (one statement)."""
        ids = [self.quarantine[k] for k in self.resolved if k in self.quarantine]
        if ids:
            now = utcnow()
            self.session.execute(
                update(IntakeQuarantine)
                .where(IntakeQuarantine.id.in_(ids))
                .values(resolved_at=now, updated_at=now)
            )


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while inside (reference counting still frees
    everything intake drops: its documents and decisions hold no cycles). A chunk allocates a
    hundred containers per order, which set off dozens of collections per chunk, and in a
    process that has lived long (a worker running many runs, the benchmark) the full ones walk
    the whole heap, far more often when hostile orders are mixed in (measured in BENCHMARKS.md,
    "Intake, third pass"). Whatever cycles a chunk leaves are collected by
    the collector's next run after it. The switch is the process's: other threads run
    without the collector for the chunk's length too (a fraction of a second)."""
    if not gc.isenabled():  # paused by the caller (or by another thread in here)
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def ingest(
    session: Session,
    rows: Iterable[OrderRow],
    routes: list[Route],
    *,
    today: date,
    run_id: str | None = None,
    ignore_go_live: frozenset[int] = frozenset(),
) -> IntakeReport:
    """Ingest one chunk of orders (the caller commits). Safe to run twice on the same rows.
    `ignore_go_live`: integration ids whose go-live point does not apply (an operator's
    takeover of a range, `legacy/go_live.py`)."""
    with _cyclic_gc_paused():
        routes = _with_go_live(session, routes, ignore_go_live)
        return _ingest(session, rows, routes, today=today, run_id=run_id)


def _with_go_live(session: Session, routes: list[Route], ignore: frozenset[int]) -> list[Route]:
    """The routes with their integrations' go-live points as committed now, read in the chunk's
    own transaction: on PostgreSQL `FOR SHARE`, so `anubis go-live` (which updates the row)
    waits for chunks in flight and chunks after it see its point; SQLite's chunk already holds
    the write lock. One query per chunk."""
    if not routes:
        return routes
    points = dict(
        session.execute(
            select(Integration.id, Integration.go_live_at)
            .where(Integration.id.in_([r.integration_id for r in routes]))
            .with_for_update(read=True)
        ).all()
    )
    return [
        replace(r, go_live_at=None if r.integration_id in ignore else points.get(r.integration_id))
        for r in routes
    ]


def _ingest(
    session: Session,
    rows: Iterable[OrderRow],
    routes: list[Route],
    *,
    today: date,
    run_id: str | None,
) -> IntakeReport:
    rows = list(rows)
    report = IntakeReport(orders=len(rows))
    if not rows:
        return report
    orders: dict[int, dict[str, Any]] = {}
    unreadable: list[tuple[OrderRow, str]] = []
    for row in rows:
        order, reason = parse_payload(row.payload)
        if order is None:
            unreadable.append((row, reason or "unreadable"))
        else:
            orders[row.id] = order
    report.readable = len(orders)
    # a first import grows the table faster than autovacuum analyses it
    refresh_if_stale(session, Subscription.__tablename__)
    batch = _Batch(session, routes, rows)
    _quarantine_unreadable(batch, report, unreadable, run_id)
    candidates: list[_Candidate] = []
    for row in rows:
        order = orders.get(row.id)
        if order is None:
            continue
        batch.resolve(row.id, "")  # readable now
        try:
            matched = [
                (route, match) for route in routes if (match := first_match(route.filters, order))
            ]
        except Exception as exc:  # routing must not stop the batch either
            reason = f"the order could not be routed ({type(exc).__name__})"
            _quarantine(batch, report, row, "", UNREADABLE, reason, run_id)
            continue
        if not matched:
            report.unrouted.append({"order_id": row.id, "reason": UNROUTED})
            report.unrouted_by_reason[UNROUTED] += 1
            continue
        document = _Document(order, row.payload)
        for route, (filter_id, filter_) in matched:
            fields = route.fields_of(filter_id, filter_)
            candidates.append(_Candidate(row, document, route, filter_id, fields))
    batch.load_cpf_holders(candidates)
    _write_candidates(batch, report, candidates, today=today, run_id=run_id)
    batch.close()
    return report


def _write_candidates(
    batch: _Batch,
    report: IntakeReport,
    candidates: list[_Candidate],
    *,
    today: date,
    run_id: str | None,
) -> None:
    """Decide and write every candidate, `WRITE_UNIT` decisions per savepoint; a row the
    database refuses is found in its unit and quarantined, and the decisions after it that
    depended on it are made again without it."""
    decisions = _decide_all(batch, report, candidates, today=today, run_id=run_id)
    while decisions:
        bad, error = None, None
        for start in range(0, len(decisions), WRITE_UNIT):
            found, error = _write_isolating(batch, report, decisions[start : start + WRITE_UNIT])
            if found is not None:
                bad = start + found
                break
        if bad is None:
            return
        refused = decisions[bad]
        candidate = refused.candidate
        log.warning(
            "intake of order %s for %s failed: %s",
            candidate.row.id,
            candidate.route.key,
            type(error).__name__,
        )
        reason = _failure_reason(error) if error is not None else "the database refused the write"
        errors = report.errors
        _quarantine(batch, report, candidate.row, candidate.route.key, WRITE_FAILED, reason, run_id)
        rest = decisions[bad + 1 :]
        if report.errors > errors:  # not even the quarantine went in: the database is down
            report.errors += len(rest)
            report.error_orders.extend(d.candidate.row.id for d in rest)
            return
        decisions = _decide_again(batch, report, rest, refused, today=today, run_id=run_id)


def _decide_again(
    batch: _Batch,
    report: IntakeReport,
    decisions: list[_Decision],
    refused: _Decision,
    *,
    today: date,
    run_id: str | None,
) -> list[_Decision]:
    """`decisions` (not written yet) once `refused` is out: a decision saw another only through
    its (integration, order) key or its (integration, CPF), so only those that share one with
    the refused decision, or with one decided again, are made again; the others are kept."""
    keys = {refused.candidate.key}
    cpfs = {_cpf_key(refused.candidate)}
    kept: dict[_Candidate, _Decision] = {}
    for decision in decisions:
        candidate = decision.candidate
        cpf_key = _cpf_key(candidate)
        if candidate.key in keys or (cpf_key is not None and cpf_key in cpfs):
            keys.add(candidate.key)
            cpfs.add(cpf_key)
        else:
            kept[candidate] = decision
    candidates = [d.candidate for d in decisions]
    return _decide_all(batch, report, candidates, today=today, run_id=run_id, kept=kept)


def _cpf_key(candidate: _Candidate) -> tuple[int, str] | None:
    """What a candidate may hold, or be a duplicate of: its integration and CPF."""
    cpf = candidate.document.cpf
    return (candidate.route.integration_id, cpf) if len(cpf) == 11 else None


def _write_isolating(
    batch: _Batch, report: IntakeReport, decisions: list[_Decision]
) -> tuple[int | None, Exception | None]:
    """Write `decisions`; if the database refuses, keep the longest prefix it accepts (binary
    search, each try in a savepoint) and return the index of the first decision it refuses
    alone, with its error. (None, None): all written."""
    error = _try_write(batch, report, decisions)
    if error is None:
        return None, None
    low, high = 0, len(decisions)  # decisions[:low] are written; the first refusal is before high
    refused_range = (low, high)  # the range `error` comes from
    named = _named_row(error, decisions)
    if named is not None:  # the database named the row: the rows before it, then it alone
        refused = _try_write(batch, report, decisions[:named])
        if refused is None:
            low, high = named, named + 1
        else:
            high, error, refused_range = named, refused, (0, named)
    while high - low > 1:
        middle = (low + high) // 2
        refused = _try_write(batch, report, decisions[low:middle])
        if refused is None:
            low = middle
        else:
            high, error, refused_range = middle, refused, (low, middle)
    if refused_range != (low, high):  # never tried alone: is it this one, or was it passing?
        error = _try_write(batch, report, decisions[low:high])
    if error is None:  # it went through alone (the refusal was elsewhere, or passing)
        return _write_isolating_rest(batch, report, decisions, low + 1)
    return low, error


def _named_row(error: Exception, decisions: list[_Decision]) -> int | None:
    """The decision whose new subscription the database named as the one it refused
    (`transitions.refused_row`: PostgreSQL's COPY says which line, SQLite's executemany
    stopped after the rows before it), if it did: tried first, so one refused row costs two
    more writes instead of a bisection's eight. Only a hint: it is checked."""
    refused = refused_row(error)
    if refused is None or refused.table != Subscription.__tablename__:
        return None
    inserts = [i for i, d in enumerate(decisions) if d.insert is not None]
    return inserts[refused.index] if 0 <= refused.index < len(inserts) else None


def _write_isolating_rest(
    batch: _Batch, report: IntakeReport, decisions: list[_Decision], start: int
) -> tuple[int | None, Exception | None]:
    bad, error = _write_isolating(batch, report, decisions[start:])
    return (None, None) if bad is None else (start + bad, error)


def _try_write(batch: _Batch, report: IntakeReport, decisions: list[_Decision]) -> Exception | None:
    """Write some decisions in a savepoint and count them; the error if the database refused."""
    if not decisions:
        return None
    try:
        with batch.session.begin_nested():
            skipped = _write_decisions(batch.session, decisions, batch.rendered)
    except Exception as exc:  # any refusal: the caller narrows it down to one order
        log.debug("a write of %d decisions was refused", len(decisions), exc_info=exc)
        return _without_tracebacks(exc)
    batch.apply(decisions, skipped)
    for d in decisions:
        if d.known is not None and d.known.id in skipped:  # another run created it meanwhile
            d.outcome, d.status = "unchanged", "unchanged"
        if d.outcome == "created":
            report.created += 1
        elif d.outcome == "revalidated":
            report.revalidated += 1
        else:
            report.unchanged += 1
        if d.outcome != "unchanged":
            key = d.candidate.route.key
            report.decided[key] += 1
            if d.status == Status.INVALID.value:
                for problem in d.candidate.known_problems():
                    report.invalid_by_reason[(key, f"{problem.field} {problem.message}")] += 1
        report.count(d.candidate.route.key, d.candidate.order.get("origin"), d.status)
    return None


def _without_tracebacks(error: Exception) -> Exception:
    """The error, and those it came from, without their tracebacks: intake keeps a refusal's
    type, message and named row only. A traceback's frames hold their callers, among them the
    frame that keeps the error in a local: a reference cycle holding the whole chunk (its
    orders, candidates and decisions) until the cyclic collector runs, which intake pauses
    during a chunk. (The traceback is logged at debug level first.)"""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        link = pending.pop()
        if id(link) in seen:
            continue
        seen.add(id(link))
        link.__traceback__ = None
        pending.extend(e for e in (link.__cause__, link.__context__) if e is not None)
    return error


def _write_decisions(
    session: Session, decisions: list[_Decision], rendered: RenderedJson
) -> set[int]:
    """The statements of a batch of decisions; the ids of subscriptions that were not inserted
    because another transaction had just created them."""
    inserts = [d.insert for d in decisions if d.insert is not None]
    inserted = write_rows(
        session,
        subscriptions=inserts,
        updates=[d.update for d in decisions if d.update is not None],
        events=[d.event for d in decisions if d.event is not None],
        rendered=rendered,
    )
    return {row["id"] for row in inserts} - inserted


def _decide_all(
    batch: _Batch,
    report: IntakeReport,
    candidates: list[_Candidate],
    *,
    today: date,
    run_id: str | None,
    kept: Mapping[_Candidate, _Decision] | None = None,
) -> list[_Decision]:
    """Decide every candidate in order, in Python: later candidates see the subscriptions and
    CPFs of earlier ones. Nothing is written and the batch's state is not changed. A candidate
    whose decision raises (a bug, a value nobody foresaw) is quarantined, and the rest go on.
    `kept`: decisions made before that still hold (they are taken as they are)."""
    kept = kept or {}
    existing: dict[tuple[int, int], _Known] = {}
    holders: dict[tuple[int, str], int] = {}
    new_keys = {c.key for c in candidates if c not in kept and c.key not in batch.existing}
    # kept decisions hold ids of rows not written yet: new ones come after them (SQLite
    # hands out ids after the table's maximum, which does not know them)
    held = max((d.insert["id"] for d in kept.values() if d.insert is not None), default=0)
    ids = iter(allocate_subscription_ids(batch.session, len(new_keys), above=held))
    now = utcnow()
    decisions = []
    for candidate in candidates:
        decision = kept.get(candidate)
        try:
            if decision is None:
                decision = _decide(
                    batch, candidate, existing, holders, ids, today=today, now=now, run_id=run_id
                )
        except Exception as exc:
            reason = f"the order could not be processed ({type(exc).__name__})"
            _quarantine(
                batch, report, candidate.row, candidate.route.key, WRITE_FAILED, reason, run_id
            )
            continue
        decisions.append(decision)
        if decision.known is not None:
            existing[candidate.key] = decision.known
            if decision.holds_cpf:
                holders[(candidate.route.integration_id, decision.holds_cpf)] = decision.known.id
    return decisions


def _decide(
    batch: _Batch,
    candidate: _Candidate,
    existing: dict[tuple[int, int], _Known],
    holders: dict[tuple[int, str], int],
    ids: Any,
    *,
    today: date,
    now: datetime,
    run_id: str | None,
) -> _Decision:
    route, row = candidate.route, candidate.row
    cpf = candidate.document.cpf
    stored_cpf = cpf if len(cpf) == 11 else None
    known = existing.get(candidate.key) or batch.existing.get(candidate.key)

    def holder_of() -> int | None:
        key = (route.integration_id, cpf)
        return holders.get(key) or batch.cpf_holders.get(key)

    if known is not None:
        if not _needs_revalidation(known, row.updated_at, route):
            return _Decision(candidate, "unchanged", "unchanged")
        # the order was corrected at the source after being refused: look again
        return _revalidate(candidate, known, holder_of(), today=today, now=now, run_id=run_id)

    problems = candidate.problems(today)
    target, error = _target(route, cpf, problems, holder_of(), row.updated_at)
    values = subscription_values(
        integration_id=route.integration_id,
        integration_filter_id=candidate.filter_id,
        order=candidate.stored_order(today),
        order_id=row.id,
        cpf=stored_cpf,
        status=target,
        error=error,
        order_updated_at=row.updated_at,
        scheduled_to=now if target is route.initial_status else None,  # due now
    )
    subscription_id = next(ids)
    values.update(id=subscription_id, created_at=now, updated_at=now)
    return _Decision(
        candidate,
        "created",
        target.value,
        known=_Known(subscription_id, target.value, row.updated_at),
        holds_cpf=cpf if values["active_cpf"] else None,
        insert=values,
        event=_event(subscription_id, route, target, error, problems, run_id, now),
    )


def _revalidate(
    candidate: _Candidate,
    known: _Known,
    holder: int | None,
    *,
    today: date,
    now: datetime,
    run_id: str | None,
) -> _Decision:
    """The decision on an order already known, corrected at the source since it was refused
    (or taken over from before go-live): validated again, its subscription updated."""
    route, row = candidate.route, candidate.row
    cpf = candidate.document.cpf
    stored_cpf = cpf if len(cpf) == 11 else None
    problems = candidate.problems(today)
    target, error = _target(route, cpf, problems, holder, row.updated_at)
    taken_over = known.status == Status.BEFORE_GO_LIVE.value
    message = error or (TAKEN_OVER_NOTE if taken_over else REVALIDATED_NOTE)
    values = transition_values(known.status, target, cpf=stored_cpf, error=message, now=now)
    stored = candidate.stored_order(today)
    values.update(
        id=known.id,
        payload=stored,
        order_updated_at=row.updated_at,
        cpf=stored_cpf,
        **offer_columns(stored),  # the corrected order's offer, for the report
    )
    return _Decision(
        candidate,
        "revalidated",
        target.value,
        known=_Known(known.id, target.value, row.updated_at),
        holds_cpf=cpf if values["active_cpf"] else None,
        update=values,
        event=_event(known.id, route, target, message, problems, run_id, now),
    )


def _event(
    subscription_id: int,
    route: Route,
    target: Status,
    error: str | None,
    problems: list[Problem],
    run_id: str | None,
    now: datetime,
) -> dict[str, Any]:
    values = event_values(
        subscription_id=subscription_id,
        integration_id=route.integration_id,
        kind=TRANSITION,
        status=target.value,
        operation=OPERATION,
        run_id=run_id,
        error=error,
        response={"problems": [p.as_dict() for p in problems]} if problems else None,
        outcome=target.value,
    )
    values.update(created_at=now, updated_at=now)
    return values


def _quarantine(
    batch: _Batch,
    report: IntakeReport,
    row: OrderRow,
    integration_key: str,
    kind: str,
    reason: str,
    run_id: str | None,
) -> None:
    """Record a poison order (or count it as an error when even that fails: the database is
    down, and the run must fail so the watermark stays before this order)."""
    batch.quarantined(row.id, integration_key)
    try:
        with batch.session.begin_nested():
            _upsert_quarantine(batch.session, row, integration_key, kind, reason, run_id)
    except Exception as exc:
        report.errors += 1
        report.error_orders.append(row.id)
        log.warning("order %s could not be quarantined: %s", row.id, type(exc).__name__)
        return
    report.quarantined.append(
        {"order_id": row.id, "integration": integration_key or None, "kind": kind, "reason": reason}
    )


def _quarantine_unreadable(
    batch: _Batch, report: IntakeReport, unreadable: list[tuple[OrderRow, str]], run_id: str | None
) -> None:
    """Record a chunk's unreadable orders with one statement (an `INSERT … ON CONFLICT DO
    UPDATE` that counts another attempt and reopens, as `_upsert_quarantine` does); if the
    database refuses it, one at a time, so that each ends quarantined or counted as an error."""
    entries = {row.id: (row, reason) for row, reason in unreadable}  # one row per statement
    if not entries:
        return
    now = utcnow()
    values = [
        {
            "order_id": row.id,
            "integration_key": "",
            "kind": UNREADABLE,
            "reason": reason,
            "order_updated_at": row.updated_at,
            "dagster_run_id": run_id,
            "attempts": 1,
            "resolved_at": None,
            "created_at": now,
            "updated_at": now,
        }
        for row, reason in entries.values()
    ]
    try:
        with batch.session.begin_nested():
            upsert(
                batch.session,
                IntakeQuarantine,
                values,
                key=("order_id", "integration_key"),
                keep=("created_at",),
                set_={"attempts": IntakeQuarantine.attempts + 1, "resolved_at": None},
            )
    except Exception as exc:
        log.warning("unreadable orders quarantined one at a time: %s", type(exc).__name__)
        for row, reason in entries.values():
            _quarantine(batch, report, row, "", UNREADABLE, reason, run_id)
        return
    for row, reason in entries.values():
        batch.quarantined(row.id, "")
        report.quarantined.append(
            {"order_id": row.id, "integration": None, "kind": UNREADABLE, "reason": reason}
        )


def _upsert_quarantine(
    session: Session,
    row: OrderRow,
    integration_key: str,
    kind: str,
    reason: str,
    run_id: str | None,
) -> None:
    """One row per (order, integration): seen again, it counts another attempt and reopens."""
    entry = session.scalars(
        select(IntakeQuarantine).where(
            IntakeQuarantine.order_id == row.id,
            IntakeQuarantine.integration_key == integration_key,
        )
    ).first()
    if entry is None:
        entry = IntakeQuarantine(order_id=row.id, integration_key=integration_key, attempts=0)
        session.add(entry)
    entry.kind = kind
    entry.reason = reason
    entry.order_updated_at = row.updated_at
    entry.dagster_run_id = run_id
    entry.attempts = (entry.attempts or 0) + 1
    entry.resolved_at = None
    entry.updated_at = utcnow()
    session.flush()


def _needs_revalidation(existing: _Known, updated_at: datetime, route: Route) -> bool:
    if existing.status == Status.BEFORE_GO_LIVE.value:  # the point no longer applies: taken over
        return route.go_live_at is None or updated_at >= route.go_live_at
    if existing.status != Status.INVALID.value:
        return False
    return existing.order_updated_at is None or updated_at > existing.order_updated_at


def _target(
    route: Route, cpf: str, problems: list[Problem], holder: int | None, updated_at: datetime
) -> tuple[Status, str | None]:
    if route.go_live_at is not None and updated_at < route.go_live_at:
        return (
            Status.BEFORE_GO_LIVE,
            f"paid before {route.key}'s go-live point ({route.go_live_at:%Y-%m-%d %H:%M} UTC): "
            "the legacy service's; never sent unless taken over (anubis takeover)",
        )
    if problems:
        return Status.INVALID, _problems_text(problems)
    if holder is not None:
        return (
            Status.DUPLICATE,
            f"CPF {mask_cpf(cpf)} already has active subscription #{holder} for {route.key}",
        )
    return route.initial_status, None
