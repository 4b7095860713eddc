"""What a legacy service knows about one student, whatever the source (Kroton's PostgreSQL
tables, an Estácio CSV export): the one shape the importer and the shadow comparison read.

Kept free of I/O so the mapping and comparison rules can be tested on their own. The legacy rows
carry no order id for Kroton (they came from a Databricks import of students, not from orders),
so `order_id` is optional and the CPF (+ integration) is the matching key then.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class LegacyRecord:
    """One student as the legacy service recorded it."""

    integration: str  # our integration key, e.g. "kroton", "estacio"
    legacy_id: str  # the legacy's own row id (e.g. `subscriptions.id`), for idempotent import
    cpf: str  # 11 digits, as the legacy stored it (normalised by the reader)
    legacy_status: str  # the legacy's own status word, mapped to ours by the importer
    order_id: int | None = None  # when the legacy knows it (the CSV may); else match on CPF
    partner_id: str | None = None  # the partner's inscription id (Kroton's, Estácio's number)
    sent_at: datetime | None = None  # when the legacy sent it to the partner (UTC)
    #: the legacy's own history (e.g. follow-ups: time and the partner's answer), oldest first
    history: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    #: what the legacy sent, when it kept it (field → value), for the shadow comparison
    payload: Mapping[str, Any] | None = None


class LegacyReader(Protocol):
    """A source of legacy records, read in bounded batches (histories run to millions)."""

    def batches(self, batch_size: int) -> Iterator[list[LegacyRecord]]: ...
