"""What a legacy import did (`legacy/importer.py`), by legacy status: rows imported and
updated, what was skipped and why, and the notes a person should look at. Kept apart from the
import itself so that the commands and jobs that show it need not load the importer's rules.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from anubis_dagster.legacy.mapping import map_status


@dataclass
class ImportReport:
    """What an import did: by legacy status, what was skipped and why."""

    integration: str
    dry_run: bool = False
    read: int = 0
    imported: Counter[str] = field(default_factory=Counter)  # legacy status → new rows
    updated: Counter[str] = field(default_factory=Counter)  # legacy status → rows updated
    unchanged: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason → records
    notes: Counter[str] = field(default_factory=Counter)  # superseded, both_sent, cpf_held…
    examples: list[str] = field(default_factory=list)  # masked, a few

    @property
    def total_imported(self) -> int:
        return sum(self.imported.values())

    def summary(self) -> dict[str, Any]:
        return {
            "integration": self.integration,
            "dry_run": self.dry_run,
            "read": self.read,
            "imported": self.total_imported,
            "imported_by_legacy_status": dict(sorted(self.imported.items())),
            "updated_by_legacy_status": dict(sorted(self.updated.items())),
            "unchanged": self.unchanged,
            "skipped": dict(sorted(self.skipped.items())),
            "notes": dict(sorted(self.notes.items())),
        }

    def describe(self) -> str:
        verb = "would import" if self.dry_run else "imported"
        lines = [
            f"{self.integration}: {self.read} legacy records read; {verb} "
            f"{self.total_imported}, updated {sum(self.updated.values())}, unchanged "
            f"{self.unchanged}, skipped {sum(self.skipped.values())}"
        ]
        for status, count in sorted(self.imported.items()):
            mapped = map_status(status)
            ours = mapped.status.value if mapped else "?"
            lines.append(f"  {status} → {ours}: {count}")
        for status, count in sorted(self.updated.items()):
            lines.append(f"  updated to legacy {status}: {count}")
        for reason, count in sorted(self.skipped.items()):
            lines.append(f"  skipped ({reason}): {count}")
        for note, count in sorted(self.notes.items()):
            lines.append(f"  {NOTES.get(note, note)}: {count}")
        return "\n".join(lines)


NOTES = {
    "superseded": "waiting subscriptions of Anubis made duplicate (the legacy registered them)",
    "both_sent": "CPFs Anubis itself sent too (kept without the CPF; look at them)",
    "cpf_held": "records whose CPF another imported record holds (kept without the CPF)",
    "kept_anubis_moved": "changed at the legacy, but Anubis has worked on them since (kept)",
}
