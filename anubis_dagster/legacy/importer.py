"""Import what a legacy service knows into the app DB (`anubis legacy import`, `legacy_import`
job): so Anubis never registers those students again, and follows the ones still open.

Each legacy record becomes one subscription of its integration, marked `legacy_status` (the
legacy's word) and mapped to our status (`legacy/mapping.py`):

- its `order_id` is the order's when the legacy knows it, else a negative stand-in
  (`synthetic_order_id`): intake then sees the order as handled, or never meets the stand-in;
- it holds the student's CPF (`active_cpf`) when our status does (sent, followed or enrolled),
  so a later order of the same CPF for the integration is a `duplicate`, never sent. When a
  subscription Anubis created but never sent (a shadow run's) holds the CPF, that one becomes
  the `duplicate`: the legacy registered the student. When Anubis sent one itself, the legacy's
  record is kept without the CPF and counted (`both_sent`) for a person to look at;
- `registered`/`awaiting_register` rows carry the partner's id (`external_id`) and are due for
  `check_job` at once, and then as any other registration until final;
- its history: the legacy's own (Kroton's follow-ups with Kroton's answers) is kept with the
  record in `payload["legacy"]` (personal data, like the order document an ingested row keeps,
  and removed with it by LGPD retention); `anubis student` shows it masked. One event row
  records the import (the legacy status, its mapping, the partner id).

Bulk: each batch is read from the app DB with two lookups (the imported rows that exist, the
CPFs held) and written with `transitions.write_rows` (COPY on PostgreSQL, executemany on
SQLite), one transaction per batch. Idempotent: a record already imported with the same legacy
status changes nothing; one whose legacy status changed since (the final import after the
legacy stopped) is updated while Anubis has not moved it itself. Resumable: a crash loses at
most the batch in flight; importing again skips what is there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from anubis_dagster.core.masking import mask_cpf, mask_text
from anubis_dagster.core.states import Status
from anubis_dagster.db import outbox
from anubis_dagster.db.bulk_write import (
    OneOf,
    RenderedJson,
    allocate_subscription_ids,
    one_of_for,
    update_rows,
    write_rows,
)
from anubis_dagster.db.models import Integration, Subscription, SubscriptionEvent, utcnow
from anubis_dagster.db.transitions import TRANSITION, move_many

# `ImportReport` is imported from here by callers older than `legacy.import_report`
from anubis_dagster.legacy.import_report import ImportReport as ImportReport
from anubis_dagster.legacy.mapping import Mapped, map_status, synthetic_order_id
from anubis_dagster.legacy.records import LegacyReader, LegacyRecord
from anubis_dagster.settings import get_settings

OPERATION = "legacy_import"
#: statuses of a subscription Anubis never sent, which an imported registration replaces: the
#: waiting ones (a step before the send retrying included), and a shadow run's (`shadowed`:
#: everything but the send was done)
NEVER_SENT = (
    Status.TO_SYNC.value,
    Status.COURSE_FAILED.value,
    Status.TO_SYNC_LGPD.value,
    Status.SYNC_LGPD_FAILED.value,
    Status.TO_REGISTER.value,
    Status.SHADOWED.value,
)


@dataclass(frozen=True)
class _Existing:
    id: int
    status: str
    legacy_status: str | None
    active_cpf: str | None


def import_legacy(
    session_factory: Callable[[], Session],
    reader: LegacyReader,
    integration_key: str,
    *,
    batch_size: int = 5000,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    run_id: str | None = None,
) -> ImportReport:
    """Import every record `reader` yields for `integration_key`, one transaction per batch
    (rolled back in a dry run, which counts exactly what a real import would do)."""
    report = ImportReport(integration=integration_key, dry_run=dry_run)
    with session_factory() as session:
        integration_id = session.scalar(
            select(Integration.id).where(Integration.key == integration_key)
        )
    if integration_id is None:
        raise ValueError(f"unknown integration {integration_key!r}")
    for records in reader.batches(batch_size):
        session = session_factory()
        try:
            import_batch(session, integration_id, records, report, run_id=run_id)
            if dry_run:
                session.rollback()
            else:
                session.commit()
        finally:
            session.close()
        if progress is not None:
            progress(len(records))
    for reason, count in (getattr(reader, "skipped", None) or {}).items():
        report.skipped[reason] += count
        report.read += count
    return report


def import_batch(
    session: Session,
    integration_id: int,
    records: Sequence[LegacyRecord],
    report: ImportReport,
    *,
    run_id: str | None = None,
) -> None:
    """Import one batch in the session's transaction (the caller commits): which records are
    wanted, what the app DB already has of them and of their CPFs, then the rows to update
    and to insert, written in a few statements."""
    report.read += len(records)
    wanted = _wanted(records, report)
    if not wanted:
        return
    one_of = one_of_for(session)
    existing = _existing(session, integration_id, wanted, one_of)
    batch = _Batch(
        integration_id,
        run_id,
        utcnow(),
        _cpf_holders(session, integration_id, wanted, existing, one_of),
    )
    new = _plan_updates(batch, wanted, existing, report)
    ids = allocate_subscription_ids(session, len(new))
    _plan_inserts(batch, zip(ids, new, strict=True), report)
    if batch.superseded:
        _supersede(session, integration_id, batch.superseded, run_id, batch.now)
    _write(session, batch)
    if len(report.examples) < 5 and batch.inserts:
        first = batch.inserts[0]
        report.examples.append(f"CPF {mask_cpf(first['cpf'])} → {first['status']}")


#: a CPF's holder in the app DB: subscription id, status, legacy status, sending since,
#: partner id
_Holder = tuple[int, str, str | None, datetime | None, str | None]
#: a wanted record: its order id (the order's, or a stand-in) → the record and its mapping
_Wanted = dict[int, tuple[LegacyRecord, Mapped]]


@dataclass
class _Batch:
    """What one batch writes, gathered before anything is written."""

    integration_id: int
    run_id: str | None
    now: datetime
    holders: dict[str, _Holder]
    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    superseded: list[int] = field(default_factory=list)


def _wanted(records: Sequence[LegacyRecord], report: ImportReport) -> _Wanted:
    """The records to import by order id; an unknown legacy status or a second record of the
    same order is skipped and counted."""
    secret = get_settings().anubis_privacy_key
    key = secret.get_secret_value().encode() if secret is not None else None
    wanted: _Wanted = {}
    for record in records:
        mapped = map_status(record.legacy_status)
        if mapped is None:
            report.skipped[f"unknown legacy status {record.legacy_status[:30]!r}"] += 1
            continue
        order_id = (
            record.order_id
            if record.order_id is not None and not mapped.order_is_anubis
            else synthetic_order_id(record.legacy_id, record.cpf, key)
        )
        if order_id in wanted:
            report.skipped["the same student twice in the legacy's records"] += 1
            continue
        wanted[order_id] = (record, mapped)
    return wanted


def _existing(
    session: Session, integration_id: int, wanted: _Wanted, one_of: OneOf
) -> dict[int, _Existing]:
    """The integration's subscriptions of the wanted orders, by order id."""
    s = Subscription
    return {
        order_id: _Existing(sid, status, legacy, active)
        for sid, order_id, status, legacy, active in session.execute(
            select(s.id, s.order_id, s.status, s.legacy_status, s.active_cpf).where(
                s.integration_id == integration_id, one_of(s.order_id, list(wanted))
            )
        )
    }


def _cpf_holders(
    session: Session,
    integration_id: int,
    wanted: _Wanted,
    existing: dict[int, _Existing],
    one_of: OneOf,
) -> dict[str, _Holder]:
    """Who holds the CPFs of the records that will be written (none on a repeated import)."""
    cpfs = sorted(
        {
            record.cpf
            for order_id, (record, _) in wanted.items()
            if (known := existing.get(order_id)) is None
            or known.legacy_status != record.legacy_status
        }
    )
    if not cpfs:
        return {}
    s = Subscription
    return {
        cpf: (sid, status, legacy, sending, external)
        for sid, cpf, status, legacy, sending, external in session.execute(
            select(
                s.id, s.active_cpf, s.status, s.legacy_status, s.sending_since, s.external_id
            ).where(s.integration_id == integration_id, one_of(s.active_cpf, cpfs))
        )
        if cpf is not None
    }


def _plan_updates(
    batch: _Batch, wanted: _Wanted, existing: dict[int, _Existing], report: ImportReport
) -> list[tuple[int, LegacyRecord, Mapped]]:
    """The updates of imported rows the legacy moved since (added to `batch`); returns the
    records that are new."""
    new: list[tuple[int, LegacyRecord, Mapped]] = []
    for order_id, (record, mapped) in wanted.items():
        known = existing.get(order_id)
        if known is None:
            new.append((order_id, record, mapped))
            continue
        if known.legacy_status is None:  # an order Anubis ingested itself: leave it
            report.skipped["the order is Anubis's own subscription"] += 1
            continue
        if known.legacy_status == record.legacy_status:
            report.unchanged += 1
            continue
        before = map_status(known.legacy_status)
        if before is None or known.status != before.status.value:
            report.notes["kept_anubis_moved"] += 1
            continue
        holds = _take_cpf(record, mapped, batch.holders, known.id, batch.superseded, report)
        batch.updates.append(
            {
                "id": known.id,
                "status": mapped.status.value,
                "legacy_status": record.legacy_status,
                "active_cpf": record.cpf if holds else None,
                "external_id": record.partner_id,
                "sent_at": record.sent_at,
                "scheduled_to": batch.now if _followed(mapped) else None,
                "updated_at": batch.now,
            }
        )
        batch.events.append(
            _import_event(known.id, batch.integration_id, record, mapped, batch.run_id, batch.now)
        )
        report.updated[record.legacy_status] += 1
    return new


def _plan_inserts(
    batch: _Batch,
    new: Iterable[tuple[int, tuple[int, LegacyRecord, Mapped]]],
    report: ImportReport,
) -> None:
    """The new subscriptions (id, (order id, record, mapping)) and their events, to `batch`."""
    for sid, (order_id, record, mapped) in new:
        holds = _take_cpf(record, mapped, batch.holders, sid, batch.superseded, report)
        batch.inserts.append(_new_row(batch, sid, order_id, record, mapped, holds=holds))
        batch.events.append(
            _import_event(sid, batch.integration_id, record, mapped, batch.run_id, batch.now)
        )
        report.imported[record.legacy_status] += 1


def _new_row(
    batch: _Batch, sid: int, order_id: int, record: LegacyRecord, mapped: Mapped, *, holds: bool
) -> dict[str, Any]:
    """The columns of an imported subscription (the legacy's record kept in its payload)."""
    return {
        "id": sid,
        "integration_id": batch.integration_id,
        "integration_filter_id": None,
        "order_id": order_id,
        "origin": None,
        "cpf": record.cpf,
        "payload": {
            "legacy": {
                "legacy_id": record.legacy_id,
                "order_id": record.order_id,
                "status": record.legacy_status,
                "partner_id": record.partner_id,
                "sent_at": record.sent_at.isoformat() if record.sent_at else None,
                "history": [dict(item) for item in record.history],
            },
            "base_user": {"cpf": record.cpf},
        },
        "ies_data": {},
        "first_name": None,
        "gender": None,
        "status": mapped.status.value,
        "active_cpf": record.cpf if holds else None,
        "attempts": 0,
        "last_error": None,
        "order_updated_at": None,
        "scheduled_to": batch.now if _followed(mapped) else None,
        "external_id": record.partner_id,
        "sent_at": record.sent_at,
        "legacy_status": record.legacy_status,
        "created_at": record.sent_at or batch.now,
        "updated_at": batch.now,
    }


def _write(session: Session, batch: _Batch) -> None:
    """New rows with their events in bulk (`write_rows`); then the updated rows, their outbox
    rows and their events."""
    updated = _ids(batch.updates)
    write_rows(
        session,
        subscriptions=batch.inserts,
        updates=[],
        events=[e for e in batch.events if e["subscription_id"] not in updated],
        rendered=RenderedJson(),
    )
    if batch.updates:
        # the legacy moved these since the last import: other services hear it as any status
        # change (read before the update: the previous status comes from the table)
        events = [e for e in batch.events if e["subscription_id"] in updated]
        outbox.bulk_event_rows(session, created=(), updated=batch.updates, events=events)
        update_rows(session, batch.updates)
        session.execute(insert(SubscriptionEvent), events)


def _ids(rows: list[dict[str, Any]]) -> set[int]:
    return {row["id"] for row in rows}


def _followed(mapped: Mapped) -> bool:
    return mapped.status in (Status.REGISTERED, Status.AWAITING_REGISTER)


def _take_cpf(
    record: LegacyRecord,
    mapped: Mapped,
    holders: dict[str, _Holder],
    subscription_id: int,
    superseded: list[int],
    report: ImportReport,
) -> bool:
    """Whether this imported record holds its CPF (see the module docstring)."""
    if not mapped.holds_cpf:
        return False
    holder = holders.get(record.cpf)
    if holder is None or holder[0] == subscription_id:
        holders[record.cpf] = (subscription_id, mapped.status.value, record.legacy_status, None, "")
        return True
    sid, status, legacy, sending, external = holder
    if legacy is not None:
        report.notes["cpf_held"] += 1
        return False
    if status in NEVER_SENT and sending is None and not external:
        superseded.append(sid)
        report.notes["superseded"] += 1
        holders[record.cpf] = (subscription_id, mapped.status.value, record.legacy_status, None, "")
        return True
    report.notes["both_sent"] += 1
    return False


def _supersede(
    session: Session, integration_id: int, ids: list[int], run_id: str | None, now: datetime
) -> None:
    """Anubis's never-sent subscriptions of students the legacy registered: `duplicate`."""
    move_many(
        session,
        ids,
        Status.DUPLICATE,
        integration_id=integration_id,
        note="the legacy service registered this student (imported from legacy): not sent",
        operation=OPERATION,
        run_id=run_id,
        now=now,
    )


@cache
def _import_message(legacy_status: str, status: str, meaning: str) -> str:
    return mask_text(f"imported from legacy: {legacy_status} → {status} ({meaning})")


def _import_event(
    sid: int,
    integration_id: int,
    record: LegacyRecord,
    mapped: Mapped,
    run_id: str | None,
    now: datetime,
) -> dict[str, Any]:
    """The import's event row, built directly: its text is one of a few fixed messages (masked
    once each) and its response holds only ids, the status word and a time, no personal data
    (the legacy's history, which may, stays in the subscription's payload)."""
    return {
        "subscription_id": sid,
        "integration_id": integration_id,
        "kind": TRANSITION,
        "status": mapped.status.value,
        "operation_name": OPERATION,
        "error_message": _import_message(record.legacy_status, mapped.status.value, mapped.meaning),
        "request": None,
        "response": {
            "legacy_id": (
                f"cpf:{mask_cpf(record.cpf)}"
                if record.legacy_id.startswith("cpf:")
                else record.legacy_id
            ),
            "legacy_status": record.legacy_status,
            "partner_id": record.partner_id,
            "sent_at": record.sent_at.isoformat() if record.sent_at else None,
        },
        "http_status": None,
        "duration_ms": None,
        "outcome": mapped.status.value,
        "dagster_run_id": run_id,
        "model": "Subscription",
        "created_at": now,
        "updated_at": now,
    }
