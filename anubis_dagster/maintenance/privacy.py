"""Data-subject requests (LGPD art. 18): what the app DB holds about one student, exported to a
file only the operator can read, or erased everywhere.

Plain Python, tested without Dagster; `anubis privacy export|erase` and the `privacy_export` /
`privacy_erase` jobs are thin wrappers.

**Who.** The operator names the student by CPF (the CLI only: Dagster stores a launched run's
config, so the Launchpad jobs take an order id or subscription id instead, and the CPF is read
from the subscription). `find_subject` collects every subscription that holds the CPF (`cpf` or
`active_cpf`) or that the ids name, their orders, and the quarantined orders whose source row
mentions the CPF (the quarantine is small: its orders are read from the orders source, batch by
batch, and their raw text searched for the CPF, formatted or not).

**Export** dumps, unmasked: the subscriptions (every column), every place of
`personal_data.PLACES` for them (events with their requests and responses, follow-ups, quarantine
rows), and the orders source rows of their orders as the marketplace holds them. Written to a
new file created with mode 0600 (never overwriting one), whose path is printed.

**Erase** empties every personal column of the subscriptions (CPF, `active_cpf`, name, gender,
the order payload but what was bought, the adapter's data, `last_error`) and scrubs every place
of `PLACES` for them, in one transaction. Each subscription ends in `erased`, a final status:
intake keeps an existing (integration, order) as it is unless it is `invalid`, so a re-ingest of
the same orders never sends the student again; an order known only from the quarantine gets an
`erased` tombstone subscription for its integration (every integration when it could not be
routed) for the same reason. A subscription claimed by a live run is not erased under it: the
request is refused, naming it, and is run again after the run (erase is idempotent). A dry run
counts and writes nothing.

**Audit.** Each request served writes one `privacy_requests` row: the kind, when, how it was
requested, the run, and counts per table, with an HMAC of the CPF under `ANUBIS_PRIVACY_KEY` (no
hash at all without the key): no personal data, and only who holds the key can tell whether a
given person's request was served.

What is not ours to erase: the orders source is the marketplace's (read-only to us: the request
goes to Quero's own process), and the partner (Kroton, Estácio) holds the registration it
received; the export lists the partner ids (`external_id`) to forward the request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from anubis_dagster.console.student import LookupKey
from anubis_dagster.core.masking import mask_text
from anubis_dagster.core.states import Status
from anubis_dagster.db.models import (
    IntakeQuarantine,
    Integration,
    PrivacyRequest,
    Subscription,
    SubscriptionEvent,
    utcnow,
)
from anubis_dagster.db.transitions import TRANSITION, event_values, transition
from anubis_dagster.intake.orders_source import OrdersSource
from anubis_dagster.maintenance.personal_data import PLACES, Subject, row_dict
from anubis_dagster.maintenance.pii import RetentionReport, anonymised_values, scrub_subject
from anubis_dagster.settings import get_settings

OPERATION = "privacy_erase"
SCAN_BATCH = 500
log = logging.getLogger(__name__)


class PrivacyError(ValueError):
    """A request that cannot be served as asked; the message says why (no personal data)."""


class ErasureBusy(PrivacyError):
    """Some of the student's subscriptions are claimed by a live run."""


def subject_hash(cpf: str | None) -> str | None:
    """HMAC-SHA256 of the CPF under `ANUBIS_PRIVACY_KEY`, None without a key (or a CPF)."""
    key = get_settings().anubis_privacy_key
    if key is None or not cpf:
        return None
    return hmac.new(key.get_secret_value().encode(), cpf.encode(), hashlib.sha256).hexdigest()


@dataclass
class Found:
    subject: Subject
    notes: list[str] = field(default_factory=list)


def _mentions(text: Any, cpf: str) -> bool:
    raw = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False, default=str)
    formatted = f"{cpf[:3]}.{cpf[3:6]}.{cpf[6:9]}-{cpf[9:]}"
    return cpf in raw or formatted in raw


def find_subject(session: Session, key: LookupKey, source: OrdersSource | None = None) -> Found:
    """The student the key names (see the module docstring)."""
    s = Subscription
    notes: list[str] = []
    named: list[int] = []
    if key.kind == "cpf":
        cpf: str | None = key.value
    else:
        number = int(key.value)
        condition: Any = {
            "order": s.order_id == number,
            "subscription": s.id == number,
        }.get(key.kind, or_(s.order_id == number, s.id == number))
        rows = session.execute(select(s.id, s.cpf).where(condition)).all()
        cpfs = {row.cpf for row in rows if row.cpf}
        if len(cpfs) > 1:
            raise PrivacyError(
                f"{key.describe()} names subscriptions of more than one student; prefix order: "
                "or subscription: to say which"
            )
        cpf = next(iter(cpfs), None)
        named = [row.id for row in rows]
    held: list[Any] = [s.id.in_(named)]
    if cpf:
        held += [s.cpf == cpf, s.active_cpf == cpf]
    found = session.execute(select(s.id, s.order_id).where(or_(*held)).order_by(s.id)).all()
    order_ids = {row.order_id for row in found}
    if cpf and source is not None:
        order_ids |= _quarantined_orders_of(session, source, cpf, notes)
    subject = Subject(cpf, tuple(row.id for row in found), tuple(sorted(order_ids)))
    return Found(subject, notes)


def _quarantined_orders_of(
    session: Session, source: OrdersSource, cpf: str, notes: list[str]
) -> set[int]:
    """Quarantined orders whose source row mentions the CPF (read a batch at a time)."""
    q = IntakeQuarantine
    found: set[int] = set()
    after = 0
    try:
        while True:
            rows = session.execute(
                select(q.id, q.order_id).where(q.id > after).order_by(q.id).limit(SCAN_BATCH)
            ).all()
            if not rows:
                return found
            after = rows[-1].id
            for order in source.read_ids({row.order_id for row in rows}):
                if _mentions(order.payload, cpf):
                    found.add(order.id)
    except Exception as exc:  # the source is the marketplace's: say so, serve the rest
        notes.append(
            "the orders source could not be read, so quarantined orders were not searched: "
            f"{type(exc).__name__}: {mask_text(str(exc))[:200]}"
        )
        return found


# --- export -----------------------------------------------------------------------------------
def export_document(
    session: Session, found: Found, source: OrdersSource | None = None
) -> dict[str, Any]:
    """Everything held about the subject, unmasked, as one JSON-ready document."""
    subject = found.subject
    notes = list(found.notes)
    subscriptions = session.scalars(
        select(Subscription).where(Subscription.id.in_(subject.subscription_ids))
    ).all()
    places: dict[str, list[dict[str, Any]]] = {}
    for p in PLACES:
        if p.model is Subscription:  # its columns are in `subscriptions`
            continue
        model_id: Any = p.model.id  # type: ignore[attr-defined]
        rows = session.scalars(select(p.model).where(p.of_subject(subject)).order_by(model_id))
        places[p.name] = [row_dict(row) for row in rows]
    orders: list[dict[str, Any]] = []
    if source is not None and subject.order_ids:
        try:
            for order in source.read_ids(subject.order_ids):
                orders.append(
                    {
                        "id": order.id,
                        "updated_at": order.updated_at,
                        "payload": _json(order.payload),
                    }
                )
        except Exception as exc:
            notes.append(
                f"the orders source could not be read: {type(exc).__name__}: "
                f"{mask_text(str(exc))[:200]}"
            )
    return {
        "generated_at": utcnow(),
        "cpf": subject.cpf,
        "subscriptions": [row_dict(sub) for sub in subscriptions],
        **places,
        "orders_source": orders,
        "notes": notes,
    }


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text  # an unreadable order, as the source holds it


def counts(document: dict[str, Any]) -> dict[str, int]:
    return {k: len(v) for k, v in document.items() if isinstance(v, list) and k != "notes"}


def write_private_file(path: Path, document: dict[str, Any]) -> Path:
    """Write `document` to a NEW file readable by its owner only (0600, whatever the umask);
    an existing file is never overwritten (`FileExistsError`)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            fd = -1
            json.dump(document, handle, ensure_ascii=False, indent=2, default=str)
    finally:
        if fd != -1:
            os.close(fd)
    return path


def export(
    session: Session,
    found: Found,
    path: Path,
    *,
    source: OrdersSource | None = None,
    requested_via: str = "cli",
    run_id: str | None = None,
) -> dict[str, int]:
    """Write the export to `path` (0600) and its audit row; the counts per table."""
    document = export_document(session, found, source)
    write_private_file(path, document)
    written = counts(document)
    _audit(session, "export", found.subject, written, requested_via, run_id)
    return written


# --- erase ------------------------------------------------------------------------------------
@dataclass
class Erasure:
    dry_run: bool
    counts: dict[str, int]
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        verb = "would erase" if self.dry_run else "erased"
        shown = ", ".join(f"{name} {count}" for name, count in self.counts.items())
        return f"{verb}: {shown}"


def erase(
    session: Session,
    found: Found,
    *,
    dry_run: bool = False,
    requested_via: str = "cli",
    run_id: str | None = None,
) -> Erasure:
    """Anonymise the subject everywhere in the app DB (the caller's transaction: all or none)."""
    subject = found.subject
    now = utcnow()
    subscriptions = list(
        session.scalars(
            select(Subscription)
            .where(Subscription.id.in_(subject.subscription_ids))
            .order_by(Subscription.id)
            .with_for_update()
        )
    )
    busy = [
        sub.id
        for sub in subscriptions
        if sub.claimed_by and sub.claimed_until is not None and sub.claimed_until > now
    ]
    if busy:
        raise ErasureBusy(
            f"subscription(s) {', '.join(f'#{i}' for i in busy)} are being worked by a run "
            "right now; nothing was erased: run the erase again once the run ends"
        )
    report = RetentionReport(dry_run=dry_run)
    scrub_subject(session, subject, dry_run=dry_run, report=report)
    changed = [sub for sub in subscriptions if sub.status != Status.ERASED.value or sub.cpf]
    tombstones = _tombstones(session, subject, dry_run=dry_run, now=now, run_id=run_id)
    result = {"subscriptions": len(changed), **report.places, "tombstones": tombstones}
    if dry_run:
        return Erasure(True, result, list(found.notes))
    for sub in subscriptions:
        if sub.status != Status.ERASED.value:
            transition(session, sub, Status.ERASED, operation=OPERATION, run_id=run_id)
        for name, value in anonymised_values(sub).items():
            setattr(sub, name, value)
        sub.active_cpf = None
        sub.gender = None
        sub.scheduled_to = None
        sub.claimed_by = sub.claimed_until = sub.sending_since = None
        sub.updated_at = sub.anonymized_at = now  # one time: not due to retention again
    _audit(session, "erase", subject, result, requested_via, run_id)
    session.flush()
    return Erasure(False, result, list(found.notes))


def _tombstones(
    session: Session, subject: Subject, *, dry_run: bool, now: datetime, run_id: str | None
) -> int:
    """An `erased` subscription for each (integration, order) known only from the quarantine,
    so that a corrected or re-ingested order is not sent either."""
    if not subject.order_ids:
        return 0
    integrations = dict(session.execute(select(Integration.key, Integration.id)).all())
    existing = set(
        session.execute(
            select(Subscription.integration_id, Subscription.order_id).where(
                Subscription.order_id.in_(subject.order_ids)
            )
        ).all()
    )
    wanted: set[tuple[int, int]] = set()
    quarantined = session.execute(
        select(IntakeQuarantine.order_id, IntakeQuarantine.integration_key).where(
            IntakeQuarantine.order_id.in_(subject.order_ids)
        )
    ).all()
    for order_id, key in quarantined:
        targets = [integrations[key]] if key in integrations else list(integrations.values())
        wanted |= {(integration_id, order_id) for integration_id in targets}
    missing = sorted(wanted - existing)
    if dry_run or not missing:
        return len(missing)
    for integration_id, order_id in missing:
        tombstone = Subscription(
            integration_id=integration_id,
            order_id=order_id,
            payload={"id": order_id},
            status=Status.ERASED.value,
            anonymized_at=now,
        )
        session.add(tombstone)
        session.flush()
        session.add(
            SubscriptionEvent(
                **event_values(
                    subscription_id=tombstone.id,
                    integration_id=integration_id,
                    kind=TRANSITION,
                    status=Status.ERASED.value,
                    operation=OPERATION,
                    run_id=run_id,
                    error="erased on the student's request before the order went through",
                    outcome=Status.ERASED.value,
                )
            )
        )
    return len(missing)


def _audit(
    session: Session,
    kind: str,
    subject: Subject,
    table_counts: dict[str, int],
    requested_via: str,
    run_id: str | None,
) -> None:
    session.add(
        PrivacyRequest(
            kind=kind,
            subject_hash=subject_hash(subject.cpf),
            requested_via=requested_via,
            dagster_run_id=run_id,
            counts=table_counts,
        )
    )
    log.info("privacy %s served (%s)", kind, table_counts)
