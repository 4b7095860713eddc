"""What became of an intake batch (`IntakeReport`): counted by every step (decisions, writes,
quarantine) and read by the run's metadata, the drift alarm and the summary alert, which need
nothing else of intake."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from anubis_dagster.core.orders import ORIGINS


@dataclass
class IntakeReport:
    """What became of a batch; goes to the run's metadata and the summary alert."""

    orders: int = 0
    created: int = 0
    unchanged: int = 0
    revalidated: int = 0
    errors: int = 0
    by_outcome: Counter[str] = field(default_factory=Counter)  # "kroton/quero_bolsa/to_sync"
    unrouted: list[dict[str, Any]] = field(default_factory=list)  # order ids + reason, no PII
    error_orders: list[int] = field(default_factory=list)
    # poison orders recorded in `intake_quarantine`: order id, integration, kind, masked reason
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    # what the drift alarm (`core.drift`) reads: orders decided now (created or validated
    # again) per integration, those refused per (integration, reason), and unrouted orders
    # of the readable ones per reason. Reasons are field names and rule messages, no data.
    decided: Counter[str] = field(default_factory=Counter)
    invalid_by_reason: Counter[tuple[str, str]] = field(default_factory=Counter)
    readable: int = 0
    unrouted_by_reason: Counter[str] = field(default_factory=Counter)
    refused_writes: int = 0  # rows the database refused (quarantined): see `write.WRITE_UNIT`

    def count(self, integration: str, origin: Any, status: str) -> None:
        # a hostile origin (10 MB, personal data) never becomes a metadata key
        known = origin if isinstance(origin, str) and origin in ORIGINS else "unknown"
        self.by_outcome[f"{integration}/{known}/{status}"] += 1

    def merge(self, other: IntakeReport) -> None:
        self.orders += other.orders
        self.created += other.created
        self.unchanged += other.unchanged
        self.revalidated += other.revalidated
        self.errors += other.errors
        self.by_outcome.update(other.by_outcome)
        self.unrouted.extend(other.unrouted)
        self.error_orders.extend(other.error_orders)
        self.quarantined.extend(other.quarantined)
        self.decided.update(other.decided)
        self.invalid_by_reason.update(other.invalid_by_reason)
        self.readable += other.readable
        self.unrouted_by_reason.update(other.unrouted_by_reason)
        self.refused_writes += other.refused_writes

    def reasons_json(self) -> dict[str, dict[str, int]]:
        """Invalid orders per integration and reason, and unrouted ones per reason (`unrouted`),
        most frequent first: the run's metadata."""
        out: dict[str, dict[str, int]] = {}
        for (integration, reason), count in self.invalid_by_reason.most_common():
            out.setdefault(integration, {})[reason] = count
        if self.unrouted_by_reason:
            out["unrouted"] = dict(self.unrouted_by_reason.most_common())
        return out
