"""The go-live point of each integration: orders paid before it are the legacy service's.

Design (issue 20). One timestamp per integration, `integrations.go_live_at`, set by an operator
(`anubis go-live KEY --at T`, or the `go_live` Launchpad job), never by the integrations file (a
file that can be deployed again must not move the point a running integration depends on).
"Paid before the point" is read on the orders stream's own position, `updated_at`: an order's
`updated_at` is at or after the moment it was paid, so an order paid after the point is never
taken for an old one. An old order changed at the source after the point is looked at like a
new one; the legacy's imported students (`legacy/importer.py`) hold their CPFs, so one the
legacy registered becomes a `duplicate`, not a second registration.

Skipping a big history costs nothing per order:

- When every enabled integration has a point, the intake watermark is moved (forward only) to
  just before the earliest one (`watermark_floor`): intake never reads the history below it.
  `anubis status` counts those orders with one indexed SQL count.
- Orders between the earliest point and an integration's later one are read (other
  integrations need them) and recorded for that integration as `before_go_live`: a final
  status that holds no CPF and is never due, with the reason in its event row (`anubis
  student` shows it, `anubis status` counts it).
- Setting a point also moves the integration's subscriptions that are waiting and were never
  sent (a shadow run's, or a first pass made before the point was set) to `before_go_live`,
  in one statement. Intake reads the points again in each chunk's own transaction (`FOR SHARE`
  on PostgreSQL), so a chunk in flight while the point is set either finished before (and its
  rows are moved here) or sees the point.

Taking a range over on purpose (`anubis takeover`) is `legacy/takeover.py`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from anubis_dagster.core.states import Status
from anubis_dagster.db.models import Cursor, Integration, Subscription, utcnow
from anubis_dagster.db.transitions import move_many
from anubis_dagster.intake.orders_source import OrderKey, OrdersSource
from anubis_dagster.intake.watermark import read_watermark

OPERATION = "go_live"
#: the largest order id: a watermark at (point - 1 µs, MAX_ID) makes intake read from the point
MAX_ID = 2**63 - 1
#: statuses a never-sent subscription may be in when its integration goes live: waiting, or
#: retrying a step before the send (a course sync or a consent that failed for now)
WAITING = (
    Status.TO_SYNC,
    Status.COURSE_FAILED,
    Status.TO_SYNC_LGPD,
    Status.SYNC_LGPD_FAILED,
    Status.TO_REGISTER,
)
HELD_BACK_NOTE = (
    "paid before {key}'s go-live point ({at:%Y-%m-%d %H:%M} UTC): the legacy service's; "
    "never sent unless taken over (anubis takeover)"
)


class UnknownIntegration(ValueError):
    pass


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass
class GoLiveChange:
    """What `set_go_live` did (or, in a dry run, would do)."""

    key: str
    at: datetime
    previous: datetime | None
    dry_run: bool
    held_back: int = 0  # waiting, never-sent subscriptions paid before the point
    floor_before: OrderKey | None = None
    floor_after: OrderKey | None = None  # the intake watermark after (None: not moved)

    def describe(self) -> str:
        verb = "would set" if self.dry_run else "set"
        lines = [
            f"{verb} {self.key}'s go-live point to {self.at.isoformat()}"
            + (f" (was {self.previous.isoformat()})" if self.previous else "")
        ]
        moved = "would move" if self.dry_run else "moved"
        lines.append(
            f"{moved} {self.held_back} waiting, never-sent subscriptions paid before it to "
            "before_go_live"
        )
        if self.floor_after is not None:
            point = self.floor_after.updated_at + timedelta(microseconds=1)
            lines.append(
                f"intake {'would read' if self.dry_run else 'reads'} from {point.isoformat()} "
                "(the earliest go-live point; orders before it are never read)"
            )
        else:
            lines.append(
                "intake watermark unchanged (already past the earliest point, or an enabled "
                "integration has no go-live point)"
            )
        return "\n".join(lines)


def integration_by_key(session: Session, key: str, *, lock: bool = False) -> Integration:
    query = select(Integration).where(Integration.key == key)
    if lock:
        query = query.with_for_update()
    integration = session.scalars(query).first()
    if integration is None:
        known = ", ".join(session.scalars(select(Integration.key).order_by(Integration.key)))
        raise UnknownIntegration(f"unknown integration {key!r} (known: {known or 'none'})")
    return integration


def _held_back(integration_id: int, at: datetime) -> list[ColumnElement[bool]]:
    s = Subscription
    return [
        s.integration_id == integration_id,
        s.status.in_([st.value for st in WAITING]),
        s.sending_since.is_(None),
        s.external_id.is_(None),
        s.legacy_status.is_(None),
        s.order_updated_at < at,
    ]


def watermark_floor(session: Session) -> datetime | None:
    """The earliest go-live point, when every enabled integration has one (else None: some
    integration wants the whole history)."""
    points = list(session.scalars(select(Integration.go_live_at).where(Integration.enabled)))
    if not points or any(p is None for p in points):
        return None
    return min(as_utc(p) for p in points if p is not None)


def floor_key(point: datetime) -> OrderKey:
    return OrderKey(as_utc(point) - timedelta(microseconds=1), MAX_ID)


def set_go_live(
    session: Session, key: str, at: datetime, *, watermark_name: str, dry_run: bool = False
) -> GoLiveChange:
    """Set `key`'s go-live point to `at` (the caller commits). Idempotent: setting the same
    point again changes nothing. Locks the integration's row first (PostgreSQL), so intake
    chunks in flight finish before and chunks after see the point."""
    at = as_utc(at)
    integration = integration_by_key(session, key, lock=not dry_run)
    change = GoLiveChange(key=key, at=at, previous=integration.go_live_at, dry_run=dry_run)
    where = _held_back(integration.id, at)
    held = [
        (sid, cpf)
        for sid, cpf in session.execute(select(Subscription.id, Subscription.cpf).where(*where))
    ]
    change.held_back = len(held)
    change.floor_before = read_watermark(session, watermark_name)
    old_floor = watermark_floor(session)
    if not dry_run:
        integration.go_live_at = at
        session.flush()
        if held:
            move_many(
                session,
                [sid for sid, _ in held],
                Status.BEFORE_GO_LIVE,
                integration_id=integration.id,
                note=HELD_BACK_NOTE.format(key=key, at=at),
                operation=OPERATION,
                run_id=None,
                now=utcnow(),
            )
    floor = watermark_floor(session) if not dry_run else _floor_if(session, integration, at)
    if floor is not None:
        target = floor_key(floor)
        current = change.floor_before
        moved_back = old_floor is not None and floor < old_floor
        if current is None or current < target or (moved_back and current > target):
            # forward: the history below is never read; back (a point set earlier than the
            # earliest one was, e.g. after a provisional point): the orders in between were
            # never read, so intake reads from the new floor again (idempotent)
            change.floor_after = target
            if not dry_run:
                _set_watermark(session, watermark_name, target)
    return change


def _floor_if(session: Session, integration: Integration, at: datetime) -> datetime | None:
    """The floor the point `at` would give (dry run: nothing written)."""
    points = [
        at if i.id == integration.id else i.go_live_at
        for i in session.scalars(select(Integration).where(Integration.enabled))
    ]
    if not points or any(p is None for p in points):
        return None
    return min(as_utc(p) for p in points if p is not None)


def _set_watermark(session: Session, name: str, key: OrderKey) -> None:
    row = session.get(Cursor, name, with_for_update=True)
    if row is None:
        session.add(Cursor(name=name, value=key.to_json()))
    else:
        row.value = key.to_json()
    session.flush()


@dataclass
class GoLiveStatus:
    """One integration's go-live state for `anubis status` and `anubis doctor`."""

    key: str
    enabled: bool
    go_live_at: datetime | None
    before_go_live: int  # subscriptions recorded before_go_live
    imported: int  # subscriptions imported from the legacy


def go_live_statuses(session: Session) -> list[GoLiveStatus]:
    """Per integration: its point, and how many subscriptions are held before it or were
    imported (two grouped counts)."""
    s = Subscription
    held = dict(
        session.execute(
            select(s.integration_id, func.count())
            .where(s.status == Status.BEFORE_GO_LIVE.value)
            .group_by(s.integration_id)
        ).all()
    )
    imported = dict(
        session.execute(
            select(s.integration_id, func.count())
            .where(s.legacy_status.is_not(None))
            .group_by(s.integration_id)
        ).all()
    )
    return [
        GoLiveStatus(
            key=i.key,
            enabled=i.enabled,
            go_live_at=i.go_live_at,
            before_go_live=int(held.get(i.id, 0)),
            imported=int(imported.get(i.id, 0)),
        )
        for i in session.scalars(select(Integration).order_by(Integration.key))
    ]


def orders_before(source: OrdersSource, point: datetime) -> int:
    """Paid orders in the source before `point` (an index-range count)."""
    t = source.table.c
    query = select(func.count()).where(t.checkout_step == "paid", t.updated_at < as_utc(point))
    with source.engine.connect() as connection:
        return int(connection.scalar(query) or 0)


def has_order_before(source: OrdersSource, point: datetime) -> bool:
    t = source.table.c
    query = select(t.id).where(t.checkout_step == "paid", t.updated_at < as_utc(point)).limit(1)
    with source.engine.connect() as connection:
        return connection.scalar(query) is not None


def go_live_lines(session: Session, source: OrdersSource | None) -> list[str]:
    """`anubis status`'s going-live section (empty when no integration has a point and nothing
    was imported or held back)."""
    rows = go_live_statuses(session)
    if not any(r.go_live_at or r.before_go_live or r.imported for r in rows):
        return []
    lines = ["going live:"]
    for r in rows:
        point = f"{r.go_live_at:%Y-%m-%d %H:%M} UTC" if r.go_live_at else "no go-live point"
        lines.append(
            f"  {r.key}: {point}; {r.before_go_live} orders paid before it not sent "
            f"(before_go_live); {r.imported} imported from the legacy"
        )
    floor = watermark_floor(session)
    if floor is not None and source is not None:
        try:
            count = orders_before(source, floor)
        except Exception as exc:  # the orders source is optional for this section
            lines.append(f"  orders source: not counted ({type(exc).__name__})")
        else:
            lines.append(
                f"  {count} paid orders before the earliest point ({floor:%Y-%m-%d %H:%M} UTC) "
                "are never read: the legacy services handled them"
            )
    return lines


def missing_points(
    session: Session, source: OrdersSource, *, now: datetime | None = None
) -> list[str]:
    """`anubis doctor`'s warning: enabled integrations without a point while the orders source
    holds orders older than a day (their first pass would send the whole history)."""
    keys = list(
        session.scalars(
            select(Integration.key).where(Integration.enabled, Integration.go_live_at.is_(None))
        )
    )
    if not keys:
        return []
    day_ago = (now or datetime.now(UTC)) - timedelta(days=1)
    if not has_order_before(source, day_ago):
        return []
    return [
        f"integration {key!r} has no go-live point and the orders source holds orders older "
        "than a day: its first pass would send every one of them (set one with `anubis go-live "
        f"{key} --at …`, see docs/cutover.md)"
        for key in sorted(keys)
    ]


__all__ = [
    "GoLiveChange",
    "GoLiveStatus",
    "UnknownIntegration",
    "go_live_lines",
    "missing_points",
    "set_go_live",
    "watermark_floor",
]
