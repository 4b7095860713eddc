"""Writing a chunk's decisions `WRITE_UNIT` at a time, each unit in a savepoint
(`transitions.write_rows`: COPY on PostgreSQL, `executemany` on SQLite). If the database refuses
a unit, it is bisected (the row the database named first; each half in its own savepoint, halves
that pass are kept) down to the one order it refuses, which is quarantined, and the orders after
it that depended on it are decided again (one may have been waiting on its CPF; their validation
is not repeated). One poison order costs about 2·log2(WRITE_UNIT) extra statements and its unit
written twice, not a savepoint per order for everybody."""

from __future__ import annotations

import logging
from datetime import date

from sqlalchemy.orm import Session

from anubis_dagster.core.states import Status
from anubis_dagster.db.models import Subscription
from anubis_dagster.db.transitions import RenderedJson, refused_row, write_rows
from anubis_dagster.intake.batch import Batch
from anubis_dagster.intake.candidates import Candidate, Decision
from anubis_dagster.intake.decide import decide_again, decide_all
from anubis_dagster.intake.quarantine import WRITE_FAILED, failure_reason, quarantine
from anubis_dagster.intake.report import IntakeReport

#: decisions written per savepoint, at most: a clean chunk in one (each savepoint and each COPY
#: is a round trip and a wait for the server: 1000 against 200 was ~12% of a PostgreSQL first
#: pass). A refused row costs about its unit written again (and the unit's bisection), so an
#: intake run starts at `SMALL_WRITE_UNIT`, doubles it after each chunk the database took
#: whole and goes back to it after a refusal (`loop.py`): with 1% hostile orders, a unit of
#: 1000 throughout ran at 69% of a clean run's speed
WRITE_UNIT = 1000
SMALL_WRITE_UNIT = 200
log = logging.getLogger(__name__)


def write_candidates(
    batch: Batch,
    report: IntakeReport,
    candidates: list[Candidate],
    *,
    today: date,
    run_id: str | None,
    unit: int = WRITE_UNIT,
) -> None:
    """Decide and write every candidate, `unit` decisions per savepoint; a row the database
    refuses is found in its unit and quarantined (counted in `report.refused_writes`), and the
    decisions after it that depended on it are made again without it."""
    decisions = decide_all(batch, report, candidates, today=today, run_id=run_id)
    while decisions:
        bad, error = None, None
        for start in range(0, len(decisions), unit):
            found, error = _write_isolating(batch, report, decisions[start : start + unit])
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
        reason = failure_reason(error) if error is not None else "the database refused the write"
        report.refused_writes += 1
        errors = report.errors
        quarantine(batch, report, candidate.row, candidate.route.key, WRITE_FAILED, reason, run_id)
        rest = decisions[bad + 1 :]
        if report.errors > errors:  # not even the quarantine went in: the database is down
            report.errors += len(rest)
            report.error_orders.extend(d.candidate.row.id for d in rest)
            return
        decisions = decide_again(batch, report, rest, refused, today=today, run_id=run_id)


def _write_isolating(
    batch: Batch, report: IntakeReport, decisions: list[Decision]
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


def _named_row(error: Exception, decisions: list[Decision]) -> int | None:
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
    batch: Batch, report: IntakeReport, decisions: list[Decision], start: int
) -> tuple[int | None, Exception | None]:
    bad, error = _write_isolating(batch, report, decisions[start:])
    return (None, None) if bad is None else (start + bad, error)


def _try_write(batch: Batch, report: IntakeReport, decisions: list[Decision]) -> Exception | None:
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
    session: Session, decisions: list[Decision], rendered: RenderedJson
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
