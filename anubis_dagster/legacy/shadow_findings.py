"""What a shadow comparison found (`legacy/shadow_report.py` does the comparing): the
students in each category with a few masked examples, the payload fields that differ, and the
two ways it is shown, a summary for run metadata and Markdown for the team that decides an
integration is ready to go live (docs/shadow.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class FieldDifference:
    field: str
    anubis: Any  # masked
    legacy: Any  # masked


@dataclass
class Category:
    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, example: Callable[[], dict[str, Any]], limit: int) -> None:
        """Count one student; build its (masked) example line only while there is room."""
        self.count += 1
        if len(self.examples) < limit:
            self.examples.append(example())


@dataclass
class ShadowReport:
    integration: str
    since: datetime
    until: datetime
    both: Category = field(default_factory=Category)
    only_legacy: Category = field(default_factory=Category)
    only_anubis: Category = field(default_factory=Category)
    #: both sent, and both payloads known: how many differ, and in which fields
    compared_payloads: int = 0
    differing_payloads: int = 0
    differences: Category = field(default_factory=Category)
    field_counts: Counter[str] = field(default_factory=Counter)
    only_legacy_reasons: Counter[str] = field(default_factory=Counter)
    neither: int = 0  # in the period, and neither side sent it
    legacy_read: int = 0

    @property
    def ready(self) -> bool:
        """Nothing to explain: every student sent by one was sent by the other, same data."""
        return not (self.only_legacy.count or self.only_anubis.count or self.differing_payloads)

    def summary(self) -> dict[str, Any]:
        return {
            "integration": self.integration,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "both_sent": self.both.count,
            "only_legacy_sent": self.only_legacy.count,
            "only_anubis_would_send": self.only_anubis.count,
            "payloads_compared": self.compared_payloads,
            "payloads_differing": self.differing_payloads,
            "fields_differing": dict(self.field_counts.most_common()),
            "only_legacy_reasons": dict(self.only_legacy_reasons.most_common()),
            "neither_sent": self.neither,
            "legacy_records_read": self.legacy_read,
            "ready": self.ready,
        }

    def to_markdown(self) -> str:
        period = f"{self.since:%Y-%m-%d %H:%M} → {self.until:%Y-%m-%d %H:%M} UTC"
        lines = [
            f"# Shadow comparison: {self.integration}",
            "",
            f"Period: {period} (legacy records read: {self.legacy_read})",
            "",
            "| | students |",
            "|---|---:|",
            f"| both sent | {self.both.count} |",
            f"| only the legacy sent | {self.only_legacy.count} |",
            f"| only Anubis would send | {self.only_anubis.count} |",
            f"| both sent, payloads differ | {self.differing_payloads} of "
            f"{self.compared_payloads} compared |",
            f"| neither sent | {self.neither} |",
            "",
            "**Ready to go live**: no difference to explain."
            if self.ready
            else "**Not ready**: the differences below need an explanation.",
        ]
        if self.only_legacy_reasons:
            lines += ["", "## Only the legacy sent: why Anubis would not", ""]
            lines += ["| reason | students |", "|---|---:|"]
            lines += [f"| {_cell(r)} | {n} |" for r, n in self.only_legacy_reasons.most_common()]
        if self.field_counts:
            lines += ["", "## Payload fields that differ", ""]
            lines += ["| field | students |", "|---|---:|"]
            lines += [f"| `{f}` | {n} |" for f, n in self.field_counts.most_common()]
        sections = (
            ("Only the legacy sent", self.only_legacy),
            ("Only Anubis would send", self.only_anubis),
            ("Payload differences", self.differences),
            ("Both sent", self.both),
        )
        for title, category in sections:
            if not category.examples:
                continue
            shown = len(category.examples)
            more = f" (first {shown} of {category.count})" if category.count > shown else ""
            lines += ["", f"## {title}{more}", ""]
            columns = list(category.examples[0])
            lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += [
                "| " + " | ".join(_cell(example.get(c)) for c in columns) + " |"
                for example in category.examples
            ]
        return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "—"
    return str(value).replace("|", "\\|").replace("\n", " ")
