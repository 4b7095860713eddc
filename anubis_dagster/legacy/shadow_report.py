"""The shadow comparison: what Anubis would have sent beside what the legacy service sent, for
one integration and period (issue 20, docs/shadow.md). This is how the team decides an
integration is ready to go live.

`compare` is a plain function over two iterables, Anubis's subscriptions (`AnubisRecord`, read by
`anubis_records` from the app DB) and the legacy's records (`LegacyRecord`, from any
`LegacyReader`), and sorts every student into:

- **both sent**: the legacy sent it and Anubis would (shadowed) or did send it; with the
  field-by-field differences of the two payloads when both are known;
- **only the legacy sent**, with why Anubis would not: invalid (and the reason), a duplicate,
  refused (course not found, bad data…), routed to another integration, not routed (filtered
  out by the integrations file), not paid or not seen in the orders source, not sent yet;
- **only Anubis would send**, with the legacy's own status when it has the student.

Matching: by order id when the legacy record has one, else by CPF within the integration.
Memory: the legacy side is streamed (millions of rows), only counts and the first `examples`
of each category are kept; the Anubis side of the period (plus a margin either side, so a
student intaken just before the period still explains a legacy send within it) is indexed
compactly, payloads kept only for the students Anubis would send.

Everything in the report is masked (`core.masking`): CPFs, names, e-mails, addresses. The
report itself (counts, examples, its summary and Markdown) is `legacy/shadow_findings.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from anubis_dagster.core.masking import mask_cpf, mask_text, mask_value
from anubis_dagster.core.redaction import redact_data
from anubis_dagster.core.states import Status
from anubis_dagster.db.models import Integration, Subscription
from anubis_dagster.legacy.records import LegacyReader, LegacyRecord
from anubis_dagster.legacy.shadow import BEFORE_SEND, PAYLOAD_KEY

# the report's types, imported from here by callers older than `legacy.shadow_findings`
from anubis_dagster.legacy.shadow_findings import Category as Category
from anubis_dagster.legacy.shadow_findings import FieldDifference as FieldDifference
from anubis_dagster.legacy.shadow_findings import ShadowReport as ShadowReport

#: Anubis sent or would send the student (shadowed: would have; the others: did, when live)
SENT_OR_WOULD = frozenset(
    {Status.SHADOWED, Status.AWAITING_REGISTER, Status.REGISTERED, Status.ENROLLED, Status.DROPPED}
)
REFUSED = frozenset(
    {
        Status.EMPTY_COURSE,
        Status.COURSE_FAILED,
        Status.SYNC_LGPD_FAILED,
        Status.REGISTER_FAILED,
        Status.FAILED,
        Status.UNKNOWN,
    }
)
#: a legacy record counts as sent when it has a send time or the partner's id, unless its
#: status says it never reached the partner
LEGACY_NOT_SENT = frozenset({"to_sync", "to_register", "empty_course", "course_failed"})
EXAMPLES = 50
#: Anubis subscriptions this far either side of the period are read to explain legacy sends
DEFAULT_MARGIN = timedelta(days=1)
BATCH = 1000

#: order id → "paid" / "not_paid" (absent: the orders source has no such order)
OrderLookup = Callable[[list[int]], Mapping[int, str]]


@dataclass(frozen=True, slots=True)
class AnubisRecord:
    """One subscription as the comparison needs it (any integration: to tell "routed
    elsewhere" apart)."""

    integration: str
    subscription_id: int
    order_id: int
    cpf: str | None
    status: str
    created_at: datetime
    reason: str | None = None  # the last error (masked when stored)
    payload: Mapping[str, Any] | None = None  # what it would send / sent, when kept


# --- the comparison ---------------------------------------------------------------------------
def legacy_sent(record: LegacyRecord) -> bool:
    if record.legacy_status.lower() in LEGACY_NOT_SENT:
        return False
    return record.sent_at is not None or bool(record.partner_id)


def _flatten(data: Any) -> dict[str, Any]:
    """{dotted.path[index]: leaf value} of a JSON-like structure (iterative: it runs once per
    student both sent)."""
    flat: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        prefix, value = stack.pop()
        if isinstance(value, dict | Mapping):
            for key, item in value.items():
                stack.append((f"{prefix}.{key}" if prefix else str(key), item))
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                stack.append((f"{prefix}[{index}]", item))
        else:
            flat[prefix] = value
    return flat


def _normal(value: Any) -> Any:
    """Values equal for the partner compare equal: 123 and "123", " a " and "a"."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    return str(value).strip()


def _masked(path: str, value: Any) -> Any:
    key = path.rsplit(".", 1)[-1].split("[", 1)[0]
    shown = mask_value(key, redact_data(value))
    return mask_text(shown) if isinstance(shown, str) else shown


def payload_differences(
    anubis: Mapping[str, Any], legacy: Mapping[str, Any]
) -> list[FieldDifference]:
    """Field-by-field differences (dotted paths), values masked; a field one side lacks is
    shown as None on that side."""
    if anubis == legacy:
        return []
    ours, theirs = _flatten(anubis), _flatten(legacy)
    found = []
    for path in sorted(set(ours) | set(theirs)):
        a, b = ours.get(path), theirs.get(path)
        if _normal(a) != _normal(b):
            found.append(FieldDifference(path, _masked(path, a), _masked(path, b)))
    return found


class _AnubisIndex:
    """The Anubis side, indexed by order id and by (integration, CPF); payloads kept only for
    the students it would send in the compared integration."""

    def __init__(self, records: Iterable[AnubisRecord], integration: str) -> None:
        self.by_order: dict[int, list[AnubisRecord]] = {}
        self.by_cpf: dict[tuple[str, str], AnubisRecord] = {}
        self.ours: dict[int, AnubisRecord] = {}  # subscription id → record, this integration
        for record in records:
            if record.integration != integration or record.status not in SENT_OR_WOULD:
                record = _without_payload(record)
            self.by_order.setdefault(record.order_id, []).append(record)
            if record.cpf:
                key = (record.integration, record.cpf)
                held = self.by_cpf.get(key)
                if held is None or _rank(record) >= _rank(held):
                    self.by_cpf[key] = record
            if record.integration == integration:
                self.ours[record.subscription_id] = record


def _without_payload(record: AnubisRecord) -> AnubisRecord:
    if record.payload is None:
        return record
    return AnubisRecord(
        record.integration,
        record.subscription_id,
        record.order_id,
        record.cpf,
        record.status,
        record.created_at,
        record.reason,
    )


def _rank(record: AnubisRecord) -> tuple[int, datetime]:
    """Which of a CPF's subscriptions answers for it: one that was (would be) sent first,
    then the most recent."""
    return (1 if record.status in SENT_OR_WOULD else 0, record.created_at)


def why_not_kind(record: AnubisRecord) -> str:
    """The kind of reason Anubis would not send a subscription it holds (for the counts)."""
    status = record.status
    if status in (Status.INVALID, Status.DUPLICATE):
        return status
    if status in REFUSED:
        return f"refused ({status})"
    if status in BEFORE_SEND:
        return f"not sent yet ({status})"
    return f"status {status}"


def why_not(record: AnubisRecord) -> str:
    """Why Anubis would not send a subscription it holds, with its reason (masked)."""
    kind = why_not_kind(record)
    if record.reason and not kind.startswith("not sent yet"):
        return f"{kind}: {mask_text(record.reason)[:200]}"
    return kind


def compare(
    anubis: Iterable[AnubisRecord],
    legacy: Iterable[LegacyRecord],
    *,
    integration: str,
    since: datetime,
    until: datetime,
    order_lookup: OrderLookup | None = None,
    examples: int = EXAMPLES,
) -> ShadowReport:
    """Compare the two sides for `integration` over [since, until). The Anubis side may hold
    every integration's subscriptions around the period (for "routed elsewhere"); the legacy
    side's records of other integrations are ignored."""
    report = ShadowReport(integration, since, until)
    index = _AnubisIndex(anubis, integration)
    matched: set[int] = set()  # our subscriptions a legacy record answered for
    unseen: list[LegacyRecord] = []  # legacy sends with no subscription of ours: batch lookup

    def in_period(when: datetime | None) -> bool:
        return when is not None and since <= when < until

    for record in legacy:
        if record.integration != integration:
            continue
        report.legacy_read += 1
        ours = _match(index, record, integration)
        if ours is not None:
            matched.add(ours.subscription_id)
        sent = legacy_sent(record)
        if sent and not in_period(record.sent_at):
            continue  # sent outside the period: not this comparison's
        if not sent and (ours is None or not in_period(ours.created_at)):
            continue
        if ours is None:
            unseen.append(record)
            if len(unseen) >= BATCH:
                _explain_unseen(report, index, unseen, integration, order_lookup, examples)
                unseen = []
            continue
        anubis_sends = ours.status in SENT_OR_WOULD
        if sent and anubis_sends:
            _both(report, ours, record, examples)
        elif sent:
            report.only_legacy_reasons[why_not_kind(ours)] += 1
            report.only_legacy.add(partial(_row, record, ours, partial(why_not, ours)), examples)
        elif anubis_sends:
            why = f"the legacy has it as {record.legacy_status}"
            report.only_anubis.add(partial(_row, record, ours, why), examples)
        else:
            report.neither += 1
    _explain_unseen(report, index, unseen, integration, order_lookup, examples)
    for ours in index.ours.values():
        if ours.subscription_id in matched or not in_period(ours.created_at):
            continue
        if ours.status in SENT_OR_WOULD:
            why = "the legacy has no record of it"
            report.only_anubis.add(partial(_row, None, ours, why), examples)
    return report


def _match(index: _AnubisIndex, record: LegacyRecord, integration: str) -> AnubisRecord | None:
    if record.order_id is not None:
        for ours in index.by_order.get(record.order_id, []):
            if ours.integration == integration:
                return ours
        return None
    return index.by_cpf.get((integration, record.cpf)) if record.cpf else None


def _both(report: ShadowReport, ours: AnubisRecord, record: LegacyRecord, examples: int) -> None:
    report.both.add(partial(_row, record, ours, ""), examples)
    if ours.payload is None or record.payload is None:
        return
    report.compared_payloads += 1
    differences = payload_differences(ours.payload, record.payload)
    if not differences:
        return
    report.differing_payloads += 1
    for difference in differences:
        report.field_counts[difference.field] += 1
        report.differences.add(
            partial(
                dict,
                subscription=f"#{ours.subscription_id}",
                order=ours.order_id,
                field=difference.field,
                anubis=difference.anubis,
                legacy=difference.legacy,
            ),
            examples,
        )


def _explain_unseen(
    report: ShadowReport,
    index: _AnubisIndex,
    records: list[LegacyRecord],
    integration: str,
    order_lookup: OrderLookup | None,
    examples: int,
) -> None:
    """Legacy sends with no subscription of ours in this integration: routed elsewhere, or
    what the orders source says of the order."""
    ids = [r.order_id for r in records if r.order_id is not None]
    found = order_lookup(ids) if (order_lookup is not None and ids) else {}
    for record in records:
        elsewhere = _elsewhere(index, record, integration)
        if elsewhere is not None:
            reason = f"routed elsewhere (to {elsewhere.integration})"
        elif record.order_id is None:
            reason = "not seen: no order of this CPF reached Anubis in the period"
        elif found.get(record.order_id) == "paid":
            reason = "not routed: filtered out by the integrations file"
        elif found.get(record.order_id) == "not_paid":
            reason = "not paid in the orders source"
        elif order_lookup is not None:
            reason = "not seen: no such order in the orders source"
        else:
            reason = "not seen by Anubis"
        report.only_legacy_reasons[reason.split(":", 1)[0].split(" (", 1)[0]] += 1
        report.only_legacy.add(partial(_row, record, elsewhere, reason), examples)


def _elsewhere(index: _AnubisIndex, record: LegacyRecord, integration: str) -> AnubisRecord | None:
    if record.order_id is not None:
        others = [
            r for r in index.by_order.get(record.order_id, []) if r.integration != integration
        ]
        return others[0] if others else None
    return None


def _row(
    record: LegacyRecord | None, ours: AnubisRecord | None, why: str | Callable[[], str]
) -> dict[str, Any]:
    """One example line, masked."""
    cpf = (record.cpf if record is not None else None) or (ours.cpf if ours else None)
    order = record.order_id if record is not None and record.order_id is not None else None
    if order is None and ours is not None:
        order = ours.order_id
    return {
        "order": order,
        "cpf": mask_cpf(cpf) if cpf else None,
        "anubis": f"#{ours.subscription_id} {ours.status}" if ours is not None else None,
        "legacy": (
            f"{record.legacy_status}"
            + (f" {record.sent_at:%Y-%m-%d %H:%M}" if record.sent_at else "")
            if record is not None
            else None
        ),
        "why": why() if callable(why) else why,
    }


# --- the two sides, read --------------------------------------------------------------------
def anubis_records(
    session: Session,
    since: datetime,
    until: datetime,
    *,
    margin: timedelta = DEFAULT_MARGIN,
    batch_size: int = BATCH,
) -> Iterator[AnubisRecord]:
    """Every integration's subscriptions created in the period widened by `margin`, streamed.
    The payload is the raw "would send" of a shadowed subscription (`ies_data`)."""
    s = Subscription
    query = (
        select(
            Integration.key,
            s.id,
            s.order_id,
            s.cpf,
            s.status,
            s.created_at,
            s.last_error,
            s.ies_data,
        )
        .join(Integration, Integration.id == s.integration_id)
        .where(s.created_at >= since - margin, s.created_at < until + margin)
        .order_by(s.id)
        .execution_options(yield_per=batch_size)
    )
    for key, sid, order_id, cpf, status, created_at, error, ies_data in session.execute(query):
        payload = (ies_data or {}).get(PAYLOAD_KEY) if status == Status.SHADOWED else None
        yield AnubisRecord(
            key,
            int(sid),
            int(order_id),
            cpf,
            status,
            created_at,
            error,
            payload if isinstance(payload, Mapping) else None,
        )


def legacy_records(reader: LegacyReader, batch_size: int = BATCH) -> Iterator[LegacyRecord]:
    for batch in reader.batches(batch_size):
        yield from batch


DEFAULT_PERIOD = timedelta(days=1)


class PeriodError(ValueError):
    pass


def parse_time(name: str, text: str) -> datetime:
    """An ISO 8601 time (UTC when it has no offset); the error names the field."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise PeriodError(
            f"{name}: not an ISO 8601 time such as 2026-11-23T00:00:00+00:00"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_period(since: str | None, until: str | None, now: datetime) -> tuple[datetime, datetime]:
    """[since, until) from ISO 8601 texts; default: the day before `until`, `until` = now.
    Refuses an empty or reversed period, naming the field."""
    end = parse_time("until", until) if until and until.strip() else now
    start = parse_time("since", since) if since and since.strip() else end - DEFAULT_PERIOD
    if start >= end:
        raise PeriodError("since: must be before until")
    return start, end
