"""Find a student: "why was this student not registered after 48 hours?" without SQL.

An operator types an order id, a subscription id or a CPF; the answer is, for each
integration, the subscription's status and why (the partner's own message), every attempt
(time, operation, outcome, HTTP status, duration, run link), the next scheduled try, the
dead-letter reason and the partner's ids. Personal data is masked, the CPF included: the full
CPF is only ever the key the operator typed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from anubis_dagster.core.masking import is_valid_cpf, mask_cpf, mask_data, mask_text
from anubis_dagster.core.states import MEANINGS, Status
from anubis_dagster.db.models import Integration, Subscription, SubscriptionEvent

MAX_ATTEMPTS_SHOWN = 50


class LookupKeyError(ValueError):
    """The key is neither an id nor a valid CPF; the message says what is accepted."""


@dataclass(frozen=True)
class LookupKey:
    """What the operator typed: `order`, `subscription`, `cpf`, or `id` (a number that may be
    either an order or a subscription id; both are searched and labelled)."""

    kind: str
    value: str

    def describe(self) -> str:
        shown = mask_cpf(self.value) if self.kind == "cpf" else self.value
        return f"{self.kind} {shown}"


def parse_key(text: str) -> LookupKey:
    """`order:123`, `subscription:45` (or `#45`), `cpf:529.982.247-25`, a formatted or
    11-digit CPF, or a bare number (order or subscription id)."""
    raw = (text or "").strip()
    prefix, _, rest = raw.partition(":")
    if rest and prefix.lower() in ("order", "subscription", "cpf"):
        kind, raw = prefix.lower(), rest.strip()
    elif raw.startswith("#"):
        kind, raw = "subscription", raw[1:].strip()
    else:
        kind = ""
    digits = re.sub(r"[.\-\s]", "", raw)
    if not digits.isdigit() or len(digits) > 19:
        raise LookupKeyError(
            "type an order id, a subscription id (#45) or a CPF (529.982.247-25); "
            "prefix order:, subscription: or cpf: to say which"
        )
    if kind == "cpf" or (not kind and (raw != digits or len(digits) == 11)):
        if len(digits) != 11 or not is_valid_cpf(digits):
            raise LookupKeyError("that CPF is not valid (11 digits with their check digits)")
        return LookupKey("cpf", digits)
    return LookupKey(kind or "id", str(int(digits)))


def parse_launch_key(text: str) -> LookupKey:
    """A key for a job launched from the Launchpad: an order or subscription id only. Dagster
    stores a run's config as it was launched (in the UI, GraphQL and run storage), so a CPF
    typed there would stay in clear; the CLI (`anubis student`, `anubis privacy`) takes one."""
    key = parse_key(text)
    if key.kind == "cpf":
        raise LookupKeyError(
            "a CPF is not accepted here: Dagster keeps a run's config, CPF included; give the "
            "order id or subscription id (#45), or use `anubis student CPF` in a terminal"
        )
    return key


@dataclass(frozen=True)
class Attempt:
    at: datetime | None
    operation: str
    outcome: str | None
    http_status: int | None
    duration_ms: float | None
    run_id: str | None
    error: str | None


@dataclass
class StudentView:
    """One subscription of the student, as an operator reads it."""

    integration: str
    subscription_id: int
    order_id: int
    origin: str | None
    cpf: str  # masked
    status: str
    why: str | None
    attempts_charged: int
    next_try: datetime | None
    sending_since: datetime | None
    dead_letter: str | None
    external_id: str | None
    created_at: datetime | None
    attempts: list[Attempt] = field(default_factory=list)
    more_attempts: int = 0
    legacy_status: str | None = None  # imported from the legacy service (issue 20)
    legacy_history: list[tuple[str, str]] = field(default_factory=list)  # (time, masked)
    #: held as `unknown` because the partner lists an inscription that is not the one we sent
    #: (issue 21): {"partner", "sent": {...}, "listed": [{...}]}, masked
    adoption: dict[str, Any] | None = None


def find_student(session: Session, key: LookupKey) -> list[StudentView]:
    """Every subscription the key names, oldest first, with its history."""
    s = Subscription
    if key.kind == "cpf":
        condition: Any = s.cpf == key.value
    elif key.kind == "order":
        condition = s.order_id == int(key.value)
    elif key.kind == "subscription":
        condition = s.id == int(key.value)
    else:
        condition = or_(s.order_id == int(key.value), s.id == int(key.value))
    rows = session.execute(
        select(s, Integration.key).join(Integration).where(condition).order_by(s.id)
    ).all()
    return [_view(session, subscription, integration) for subscription, integration in rows]


def _view(session: Session, sub: Subscription, integration: str) -> StudentView:
    events = list(
        session.scalars(
            select(SubscriptionEvent)
            .where(SubscriptionEvent.subscription_id == sub.id)
            .order_by(SubscriptionEvent.id)
        )
    )
    attempts = [
        Attempt(
            e.created_at,
            e.operation_name,
            e.outcome,
            e.http_status,
            e.duration_ms,
            e.dagster_run_id,
            e.error_message,
        )
        for e in events
        if e.kind == "attempt"
    ]
    transitions = [e for e in events if e.kind == "transition"]
    dead = next((e.error_message for e in reversed(transitions) if e.status == "failed"), None)
    why = sub.last_error or next(
        (e.error_message for e in reversed(transitions) if e.error_message), None
    )
    return StudentView(
        integration=integration,
        subscription_id=sub.id,
        order_id=sub.order_id,
        origin=sub.origin,
        cpf=mask_cpf(sub.cpf),
        status=sub.status,
        why=mask_text(why) if why else None,
        attempts_charged=sub.attempts,
        next_try=sub.scheduled_to,
        sending_since=sub.sending_since,
        dead_letter=mask_text(dead) if dead else None,
        external_id=sub.external_id,
        created_at=sub.created_at,
        attempts=attempts[-MAX_ATTEMPTS_SHOWN:],
        more_attempts=max(0, len(attempts) - MAX_ATTEMPTS_SHOWN),
        legacy_status=sub.legacy_status,
        legacy_history=_legacy_history(sub.payload),
        adoption=_adoption(sub),
    )


def _legacy_history(payload: Any) -> list[tuple[str, str]]:
    """The legacy service's own history of an imported student (kept in its payload), masked."""
    legacy = payload.get("legacy") if isinstance(payload, dict) else None
    items = legacy.get("history") if isinstance(legacy, dict) else None
    if not isinstance(items, list):
        return []
    return [
        (
            str(item.get("at") or "-") if isinstance(item, dict) else "-",
            mask_text(json.dumps(item, default=str, ensure_ascii=False)),
        )
        for item in items[-MAX_ATTEMPTS_SHOWN:]
    ]


def _adoption(sub: Subscription) -> dict[str, Any] | None:
    found = (sub.ies_data or {}).get("adoption")
    if sub.status != "unknown" or not isinstance(found, dict):
        return None
    return mask_data(found)


def render_markdown(key: LookupKey, views: list[StudentView], run_link: Any) -> str:
    """The report, as markdown (the run page shows it; a terminal reads it as it is).
    `run_link(run_id) -> str` makes each attempt's run clickable."""
    if not views:
        return f"No subscription found for {key.describe()}."
    parts = [f"# Student lookup: {key.describe()}", ""]
    note = ambiguity(key, views)
    if note:
        parts += [f"**{note}**", ""]
    for view in views:
        parts += _section(view, run_link)
    return "\n".join(parts)


def ambiguity(key: LookupKey, views: list[StudentView]) -> str | None:
    """A bare number that is both an order id and another subscription's id names two
    students: say so, and how to pick one."""
    if key.kind != "id":
        return None
    number = int(key.value)
    by_order = {v.subscription_id for v in views if v.order_id == number}
    by_subscription = {v.subscription_id for v in views if v.subscription_id == number}
    if not by_order or not by_subscription or by_order <= by_subscription:
        return None
    return (
        f"{number} is both order {number} and subscription #{number}, two different "
        f"students: both are shown; type `order:{number}` or `#{number}` to pick one"
    )


def _section(view: StudentView, run_link: Any) -> list[str]:
    lines = [
        f"## {view.integration}: subscription #{view.subscription_id} (order {view.order_id})",
        "",
        f"- **status**: `{view.status}` ({_meaning(view.status)})"
        + (f": {_code(view.why)}" if view.why else ""),
        f"- origin: {view.origin or '-'} · CPF {_code(view.cpf)} · since {_time(view.created_at)}",
        f"- partner id: {view.external_id or '-'}",
        f"- attempts charged: {view.attempts_charged}; next try: {_time(view.next_try)}",
    ]
    if view.sending_since is not None:
        lines.append(
            f"- a registration left at {_time(view.sending_since)} without a clear answer: "
            "the partner is asked before anything is sent again"
        )
    if view.dead_letter:
        lines.append(f"- **dead letter**: {_code(view.dead_letter)}")
    if view.legacy_status is not None:
        lines.append(f"- **imported from legacy** (legacy status `{view.legacy_status}`)")
        lines += [f"  - {at} {_code(text[:300])}" for at, text in view.legacy_history]
    if view.adoption:
        lines += _candidates(view.adoption)
    lines += [
        "",
        "Every request sent for the student (outcome `refused`: the partner said no, in its "
        "own words in the error column, whatever the HTTP status):",
        "",
        "| time (UTC) | operation | outcome | HTTP | ms | run | error |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in view.attempts:
        run = f"[{a.run_id[:8]}]({run_link(a.run_id)})" if a.run_id else "-"
        error = _code(mask_text(a.error).replace("|", "/")[:160]) if a.error else ""
        lines.append(
            f"| {_time(a.at)} | {a.operation} | {a.outcome or '-'} | {a.http_status or '-'} | "
            f"{'-' if a.duration_ms is None else f'{a.duration_ms:.0f}'} | {run} | {error} |"
        )
    if not view.attempts:
        lines.append("| - | no request sent yet | | | | | |")
    if view.more_attempts:
        lines.append(f"\n({view.more_attempts} earlier attempts not shown)")
    return [*lines, ""]


def _candidates(adoption: dict[str, Any]) -> list[str]:
    """Both candidates of a held adoption: what we sent, and what the partner lists."""

    def shown(values: dict[str, Any]) -> str:
        parts = []
        for name, value in values.items():
            if value in (None, "", []):
                continue
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"{name} {text}")
        return _code("; ".join(parts) or "nothing shown")

    partner = adoption.get("partner") or "the partner"
    lines = [
        f"- **not adopted**: {partner} lists an inscription of this CPF that does not match "
        "what we sent; settle it by hand (requeue, or record the partner's id)",
        f"  - we sent: {shown(dict(adoption.get('sent') or {}))}",
    ]
    for listed in adoption.get("listed") or []:
        lines.append(f"  - {partner} lists: {shown(dict(listed))}")
    return lines


def _meaning(status: str) -> str:
    try:
        return MEANINGS[Status(status)]
    except ValueError:
        return "a status this version does not know"


def _code(text: str | None) -> str:
    """Masked text as a code span: its asterisks (`***.575.841-**`, `M*** A***`) must reach the
    reader as they are, not turn into bold and italics in the run page."""
    return "`" + (text or "-").replace("`", "'") + "`"


def _time(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value is not None else "-"
