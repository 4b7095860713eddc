"""Who needs attention (issue 23): every student an operator has to look at, with the reason,
without SQL.

A student needs attention when no more work happens on it without an operator (dead-lettered:
`failed`; refused by the partner: `register_failed`, `empty_course`; held for review:
`unknown`), when its partner step keeps failing (`course_failed`, `sync_lgpd_failed`: retried on
the schedule, but failing), or when it has waited for delivery longer than `WAITING_LIMIT`
since payment (the health check's backlog-age warning level). Personal data is masked: the CPF
and any partner message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, or_, select, type_coerce
from sqlalchemy.orm import Session

from anubis_dagster.console.report import format_table
from anubis_dagster.core.masking import mask_cpf, mask_text
from anubis_dagster.core.states import Status
from anubis_dagster.db.models import Integration, Subscription, SubscriptionEvent, UTCDateTime

#: statuses that need an operator whatever their age, and what they mean to one
ATTENTION: dict[str, str] = {
    Status.FAILED: "dead-lettered",
    Status.REGISTER_FAILED: "refused by the partner",
    Status.EMPTY_COURSE: "refused: no matching course at the partner",
    Status.UNKNOWN: "held for review: the partner may have it",
    Status.COURSE_FAILED: "course search failing (retried)",
    Status.SYNC_LGPD_FAILED: "LGPD consent failing (retried)",
}
#: statuses still on their way to the partner: they need attention only past WAITING_LIMIT
WAITING = (Status.TO_SYNC_LGPD, Status.TO_SYNC, Status.TO_REGISTER, Status.AWAITING_REGISTER)
#: a student waiting longer than this since payment is late (health's backlog-age warning)
WAITING_LIMIT = timedelta(hours=24)
#: rows listed at most; the count says how many more there are
MAX_LISTED = 500


@dataclass(frozen=True)
class AttentionItem:
    integration: str
    subscription_id: int
    order_id: int
    status: str
    reason: str  # the category, then the partner's or Anubis's own message, masked
    cpf: str  # masked
    waiting: timedelta  # since payment (the order's last update when ingested)


@dataclass(frozen=True)
class AttentionList:
    items: list[AttentionItem]
    total: int  # every student matching, listed or not


def needs_attention(
    session: Session,
    *,
    now: datetime | None = None,
    integration: str | None = None,
    since: datetime | None = None,
    waiting_limit: timedelta = WAITING_LIMIT,
    limit: int = MAX_LISTED,
) -> AttentionList:
    """Every student needing attention, the longest waiting first: of one integration if
    `integration` is given, ingested at or after `since` if given."""
    now = now or datetime.now(UTC)
    s = Subscription
    paid = type_coerce(func.coalesce(s.order_updated_at, s.created_at), UTCDateTime)
    condition = or_(
        s.status.in_(list(ATTENTION)),
        and_(s.status.in_(list(WAITING)), paid < now - waiting_limit),
    )
    # a student imported from the legacy service is the legacy's story: its kept failures are
    # not Anubis's dead letters (the requeue refuses them; a takeover sends their order), and
    # its open registrations are followed by the status checks like any other
    filters = [condition, s.legacy_status.is_(None)]
    if integration is not None:
        filters.append(Integration.key == integration)
    if since is not None:
        filters.append(s.created_at >= since)
    total = session.scalar(select(func.count()).select_from(s).join(Integration).where(*filters))
    rows = session.execute(
        select(s, Integration.key, paid)
        .join(Integration)
        .where(*filters)
        .order_by(paid, s.id)
        .limit(limit)
    ).all()
    messages = _last_messages(session, [sub.id for sub, _, _ in rows])
    items = []
    for sub, key, paid_at in rows:
        category = ATTENTION.get(sub.status) or f"waiting in {sub.status}"
        message = sub.last_error or messages.get(sub.id)
        reason = f"{category}: {mask_text(message)[:200]}" if message else category
        items.append(
            AttentionItem(
                integration=key,
                subscription_id=sub.id,
                order_id=sub.order_id,
                status=sub.status,
                reason=reason,
                cpf=mask_cpf(sub.cpf) if sub.cpf else "-",
                waiting=max(timedelta(0), now - paid_at) if paid_at else timedelta(0),
            )
        )
    return AttentionList(items, int(total or 0))


def _last_messages(session: Session, ids: list[int]) -> dict[int, str]:
    """Each subscription's last transition message (the dead-letter reason), one query."""
    if not ids:
        return {}
    e = SubscriptionEvent
    last = (
        select(func.max(e.id))
        .where(e.subscription_id.in_(ids), e.kind == "transition", e.error_message.is_not(None))
        .group_by(e.subscription_id)
    )
    rows = session.execute(select(e.subscription_id, e.error_message).where(e.id.in_(last)))
    return {sid: text for sid, text in rows if sid is not None and text}


def format_attention(result: AttentionList) -> str:
    """The list as a terminal table, one student a row (the waiting time last, aligned)."""
    if not result.items:
        return "No student needs attention."
    rows = [
        [
            item.integration,
            f"#{item.subscription_id}",
            str(item.order_id),
            item.status,
            item.cpf,
            item.reason,
            _hours(item.waiting),
        ]
        for item in result.items
    ]
    table = format_table(
        rows, ["integration", "subscription", "order", "status", "CPF", "reason", "waiting"]
    )
    more = result.total - len(result.items)
    tail = f"\n({more} more not listed; narrow with --integration or --since)" if more else ""
    return f"{result.total} students need attention\n\n{table}{tail}"


def render_attention_markdown(result: AttentionList) -> str:
    """The list for the run page (student_lookup with `needs_attention: true`); masked values
    are code spans, so that their asterisks do not turn into bold."""
    if not result.items:
        return "No student needs attention."
    lines = [
        f"# {result.total} students need attention",
        "",
        "| integration | subscription | order | status | CPF | reason | waiting |",
        "|---|---|---|---|---|---|---|",
    ]
    for item in result.items:
        reason = item.reason.replace("|", "/").replace("`", "'")
        lines.append(
            f"| {item.integration} | #{item.subscription_id} | {item.order_id} | "
            f"`{item.status}` | `{item.cpf}` | `{reason}` | {_hours(item.waiting)} |"
        )
    more = result.total - len(result.items)
    if more:
        lines.append(f"\n({more} more not listed; narrow with `integration`)")
    return "\n".join(lines)


def _hours(value: timedelta) -> str:
    hours = value.total_seconds() / 3600
    return f"{hours / 24:.1f} d" if hours >= 48 else f"{hours:.1f} h"
