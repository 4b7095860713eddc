"""Deciding a chunk, in Python, before anything is written: each candidate is created,
validated again (an order corrected at the source, or taken over from before its go-live point)
or left unchanged, in the status its validation, go-live point and CPF holder give it; later
candidates see earlier ones. `decide_again` makes again only the decisions a refused row
touched. Apart from the writing, so one order's rules read in one place."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from anubis_dagster.core.masking import mask_cpf, mask_text
from anubis_dagster.core.offer import offer_columns
from anubis_dagster.core.order_document import Problem
from anubis_dagster.core.states import Status
from anubis_dagster.db.models import utcnow
from anubis_dagster.db.transitions import (
    TRANSITION,
    allocate_subscription_ids,
    event_values,
    subscription_values,
    transition_values,
)
from anubis_dagster.intake.batch import Batch
from anubis_dagster.intake.candidates import Candidate, Decision, Known, needs_revalidation
from anubis_dagster.intake.quarantine import WRITE_FAILED, quarantine
from anubis_dagster.intake.report import IntakeReport
from anubis_dagster.intake.routes import Route

OPERATION = "intake"
REVALIDATED_NOTE = "order corrected at the source; validated again"
TAKEN_OVER_NOTE = "taken over by an operator: sent by Anubis although paid before the go-live point"


def decide_again(
    batch: Batch,
    report: IntakeReport,
    decisions: list[Decision],
    refused: Decision,
    *,
    today: date,
    run_id: str | None,
) -> list[Decision]:
    """`decisions` (not written yet) once `refused` is out: a decision saw another only through
    its (integration, order) key or its (integration, CPF), so only those that share one with
    the refused decision, or with one decided again, are made again; the others are kept."""
    keys = {refused.candidate.key}
    cpfs = {_cpf_key(refused.candidate)}
    kept: dict[Candidate, Decision] = {}
    for decision in decisions:
        candidate = decision.candidate
        cpf_key = _cpf_key(candidate)
        if candidate.key in keys or (cpf_key is not None and cpf_key in cpfs):
            keys.add(candidate.key)
            cpfs.add(cpf_key)
        else:
            kept[candidate] = decision
    candidates = [d.candidate for d in decisions]
    return decide_all(batch, report, candidates, today=today, run_id=run_id, kept=kept)


def _cpf_key(candidate: Candidate) -> tuple[int, str] | None:
    """What a candidate may hold, or be a duplicate of: its integration and CPF."""
    cpf = candidate.document.cpf
    return (candidate.route.integration_id, cpf) if len(cpf) == 11 else None


def decide_all(
    batch: Batch,
    report: IntakeReport,
    candidates: list[Candidate],
    *,
    today: date,
    run_id: str | None,
    kept: Mapping[Candidate, Decision] | None = None,
) -> list[Decision]:
    """Decide every candidate in order, in Python: later candidates see the subscriptions and
    CPFs of earlier ones. Nothing is written and the batch's state is not changed. A candidate
    whose decision raises (a bug, a value nobody foresaw) is quarantined, and the rest go on.
    `kept`: decisions made before that still hold (they are taken as they are)."""
    kept = kept or {}
    existing: dict[tuple[int, int], Known] = {}
    holders: dict[tuple[int, str], int] = {}
    new_keys = {c.key for c in candidates if c not in kept and c.key not in batch.existing}
    # kept decisions hold ids of rows not written yet: new ones come after them (SQLite
    # hands out ids after the table's maximum, which does not know them)
    held = max((d.insert["id"] for d in kept.values() if d.insert is not None), default=0)
    ids = iter(allocate_subscription_ids(batch.session, len(new_keys), above=held))
    rows = _Rows(utcnow(), run_id)
    decisions = []
    for candidate in candidates:
        decision = kept.get(candidate)
        try:
            if decision is None:
                decision = _decide(batch, candidate, existing, holders, ids, rows, today=today)
        except Exception as exc:
            reason = f"the order could not be processed ({type(exc).__name__})"
            quarantine(
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
    batch: Batch,
    candidate: Candidate,
    existing: dict[tuple[int, int], Known],
    holders: dict[tuple[int, str], int],
    ids: Any,
    rows: _Rows,
    *,
    today: date,
) -> Decision:
    route, row = candidate.route, candidate.row
    now = rows.now
    cpf = candidate.document.cpf
    stored_cpf = cpf if len(cpf) == 11 else None
    known = existing.get(candidate.key) or batch.existing.get(candidate.key)

    def holder_of() -> int | None:
        key = (route.integration_id, cpf)
        return holders.get(key) or batch.cpf_holders.get(key)

    if known is not None:
        if not needs_revalidation(known, row.updated_at, route):
            return Decision(candidate, "unchanged", "unchanged")
        # the order was corrected at the source after being refused: look again
        return _revalidate(candidate, known, holder_of(), rows, today=today)

    problems = candidate.problems(today)
    target, error = _target(route, cpf, problems, holder_of(), row.updated_at)
    values = subscription_values(
        integration_id=route.integration_id,
        integration_filter_id=candidate.filter_id,
        order=candidate.stored_order(today),
        order_id=row.id,
        cpf=stored_cpf,
        status=target,
        order_updated_at=row.updated_at,
        scheduled_to=now if target is route.initial_status else None,  # due now
    )
    subscription_id = next(ids)
    values.update(id=subscription_id, created_at=now, updated_at=now)
    values["last_error"] = rows.masked(error)
    return Decision(
        candidate,
        "created",
        target.value,
        known=Known(subscription_id, target.value, row.updated_at),
        holds_cpf=cpf if values["active_cpf"] else None,
        insert=values,
        event=rows.event(subscription_id, route, target, error, problems),
    )


def _revalidate(
    candidate: Candidate,
    known: Known,
    holder: int | None,
    rows: _Rows,
    *,
    today: date,
) -> Decision:
    """The decision on an order already known, corrected at the source since it was refused
    (or taken over from before go-live): validated again, its subscription updated."""
    route, row = candidate.route, candidate.row
    cpf = candidate.document.cpf
    stored_cpf = cpf if len(cpf) == 11 else None
    problems = candidate.problems(today)
    target, error = _target(route, cpf, problems, holder, row.updated_at)
    taken_over = known.status == Status.BEFORE_GO_LIVE.value
    message = error or (TAKEN_OVER_NOTE if taken_over else REVALIDATED_NOTE)
    values = transition_values(known.status, target, cpf=stored_cpf, error=message, now=rows.now)
    stored = candidate.stored_order(today)
    values.update(
        id=known.id,
        payload=stored,
        order_updated_at=row.updated_at,
        cpf=stored_cpf,
        **offer_columns(stored),  # the corrected order's offer, for the report
    )
    return Decision(
        candidate,
        "revalidated",
        target.value,
        known=Known(known.id, target.value, row.updated_at),
        holds_cpf=cpf if values["active_cpf"] else None,
        update=values,
        event=rows.event(known.id, route, target, message, problems),
    )


class _Rows:
    """The parts of a chunk's rows that repeat from order to order, masked once: an invalid
    order's reason and its problems are made of field names and rule messages (never a value,
    `core/validation.py`), so a chunk holds a few distinct ones, and masking them (regexes over
    every text) was most of what an invalid order cost. Lives as long as one `decide_all`."""

    def __init__(self, now: datetime, run_id: str | None) -> None:
        self.now = now
        self.run_id = run_id
        self._masked: dict[str, str] = {}
        self._events: dict[tuple[Any, ...], dict[str, Any]] = {}

    def masked(self, error: str | None) -> str | None:
        """`mask_text(error)`, as `subscription_values` stores it."""
        if not error:
            return None
        found = self._masked.get(error)
        if found is None:
            found = self._masked[error] = mask_text(error)
        return found

    def event(
        self,
        subscription_id: int,
        route: Route,
        target: Status,
        error: str | None,
        problems: list[Problem],
    ) -> dict[str, Any]:
        """The decision's event row (`event_values`, masked)."""
        key = (route.integration_id, target, error, *problems)
        template = self._events.get(key)
        if template is None:
            template = event_values(
                subscription_id=None,
                integration_id=route.integration_id,
                kind=TRANSITION,
                status=target.value,
                operation=OPERATION,
                run_id=self.run_id,
                error=error,
                response={"problems": [p.as_dict() for p in problems]} if problems else None,
                outcome=target.value,
            )
            template.update(created_at=self.now, updated_at=self.now)
            self._events[key] = template
        values = dict(template)  # its documents are shared: `write_rows` renders each once
        values["subscription_id"] = subscription_id
        return values


def _problems_text(problems: list[Problem]) -> str:
    # "field - message", not "field: message": masking reads "full_name: …" as a labelled name
    return "; ".join(f"{p.field} - {p.message}" for p in problems)


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
