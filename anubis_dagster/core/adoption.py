"""Whether an inscription a partner lists is ours (issue 21): adopt only our own.

After a lost answer (the lookup by CPF), a Kroton 409 or an Estácio ATL016, the partner shows
an inscription of the student's CPF. It may be someone else's doing: an older inscription, the
student's own at another course, another channel's. It is ours only when it matches what we
sent, as far as the partner's answer shows it:

- the course (or offer), the campus and the capture period we sent, each compared when the
  answer shows it;
- created after our send began. A registration sent for the first time (no earlier unknown
  send) cannot have created anything listed before its answer: a 409/ATL016 to it names an
  inscription that was there already, never ours.

Anything else holds the student as `unknown`, with both candidates shown (what we sent, what
the partner lists) for a person to settle. Plain functions, tested without HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

#: the partner's clock and ours may disagree by this much
CLOCK_TOLERANCE = timedelta(minutes=2)


def _norm(value: Any) -> str:
    return " ".join(str(value).split()).casefold()


def _values(values: Iterable[Any]) -> frozenset[str]:
    return frozenset(str(v).strip() for v in values if v not in (None, ""))


def _among(value: str, ours: frozenset[str]) -> bool:
    return _norm(value) in {_norm(v) for v in ours}


@dataclass(frozen=True)
class Sent:
    """What we sent, in the terms the partner's answers use (any set may be empty: unknown)."""

    courses: frozenset[str] = frozenset()
    campuses: frozenset[str] = frozenset()
    periods: frozenset[str] = frozenset()
    #: when our first send of this registration began; None: this is the first send
    send_began: datetime | None = None

    @classmethod
    def of(
        cls,
        *,
        courses: Iterable[Any] = (),
        campuses: Iterable[Any] = (),
        periods: Iterable[Any] = (),
        send_began: datetime | None = None,
    ) -> Sent:
        return cls(_values(courses), _values(campuses), _values(periods), send_began)

    def shown(self) -> dict[str, Any]:
        """For the student report."""
        return {
            "course": sorted(self.courses),
            "campus": sorted(self.campuses),
            "capture_period": sorted(self.periods),
            "send_began": self.send_began.isoformat() if self.send_began else None,
        }


@dataclass(frozen=True)
class Candidate:
    """An inscription as the partner's answer shows it (None: not shown)."""

    id: str | None
    course: str | None = None
    campus: str | None = None
    period: str | None = None
    created_at: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def shown(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "course": self.course,
            "campus": self.campus,
            "capture_period": self.period,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            **dict(self.extra),
        }


def mismatches(candidate: Candidate, sent: Sent) -> list[str]:
    """Why `candidate` is not ours (empty: it is, as far as the answer shows)."""
    reasons = []
    if sent.send_began is None:
        reasons.append("it was there before our first send")
    for name, value, ours in (
        ("course", candidate.course, sent.courses),
        ("campus", candidate.campus, sent.campuses),
        ("capture period", candidate.period, sent.periods),
    ):
        if value not in (None, "") and ours and not _among(value, ours):
            reasons.append(f"{name} {value}, we sent {' or '.join(sorted(ours))}")
    began, created = sent.send_began, candidate.created_at
    if began is not None and created is not None and created < began - CLOCK_TOLERANCE:
        reasons.append(
            f"created {created:%Y-%m-%d %H:%M} UTC, before our send began "
            f"({began:%Y-%m-%d %H:%M} UTC)"
        )
    return reasons


def is_ours(candidate: Candidate, sent: Sent) -> bool:
    return not mismatches(candidate, sent)


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time as a partner may write it (UTC when it names no zone)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def held_reason(partner: str, candidates: list[Candidate], sent: Sent) -> str:
    """The `unknown` hold's reason: what the partner lists and why none of it is ours."""
    parts = [f"#{c.id or '?'} ({'; '.join(mismatches(c, sent)) or 'matches'})" for c in candidates]
    return (
        f"{partner} lists an inscription of this CPF that is not the one we sent: "
        + ", ".join(parts)
        + "; held for a person (both candidates in `anubis student`), not adopted"
    )
