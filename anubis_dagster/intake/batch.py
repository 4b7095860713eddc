"""One chunk's view of the database (`Batch`): the subscriptions that exist, the CPFs held and
the orders in quarantine, read with one query each and kept up to date in Python as decisions
are written, so deciding an order costs no round trip."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, any_, bindparam, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from anubis_dagster.db.models import IntakeQuarantine, Subscription, utcnow
from anubis_dagster.db.transitions import RenderedJson
from anubis_dagster.intake.candidates import Candidate, Decision, Known, needs_revalidation
from anubis_dagster.intake.orders_source import OrderRow
from anubis_dagster.intake.routes import Route


def _one_of(session: Session) -> Callable[[Any, list[Any]], ColumnElement[bool]]:
    """`column IN (values)` for a chunk's worth of values. PostgreSQL: `= ANY(array)`, one
    parameter; with 500 `IN` parameters psycopg spends longer parsing the statement in Python
    than the server spends answering it."""
    if session.get_bind().dialect.name != "postgresql":
        return lambda column, values: column.in_(values)
    return lambda column, values: (
        column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    )


class Batch:
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
        self.existing: dict[tuple[int, int], Known] = {
            (i, o): Known(sid, status, stamp)
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

    def load_cpf_holders(self, candidates: list[Candidate]) -> None:
        """Which subscriptions hold the CPFs of the candidates that will be decided (new ones,
        and refused ones corrected at the source): one query, none on a re-ingest."""
        cpfs = {
            cpf
            for candidate in candidates
            if (known := self.existing.get(candidate.key)) is None
            or needs_revalidation(known, candidate.row.updated_at, candidate.route)
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

    def apply(self, decisions: list[Decision], skipped: set[int]) -> None:
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
