"""What a delivery run was asked to do (`DeliveryRequest`) and what each of its steps did
(`StepReport`): filled in by the runner, the claims and the recorder, read by the run's summary
and its alerts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EXAMPLES = 5


@dataclass
class DeliveryRequest:
    """What the operator (Launchpad) or the sensor asked this run to do; each step adds its
    summary to `reports`, for the run's closing summary alert."""

    subscription_ids: list[int] = field(default_factory=list)  # empty = everything due
    limit: int = 200
    dry_run: bool = False
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    reports: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StepReport:
    step: str
    processed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    dead_lettered: list[int] = field(default_factory=list)
    #: sent to a partner that cannot be asked, answer lost: `unknown`, for a person to settle
    held_for_review: list[int] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    #: registrations the partner accepted in this step (moved to awaiting_register/registered)
    registered: int = 0
    #: subscriptions this step failed: a retry scheduled, a dead letter, held unknown
    failed: int = 0
    #: registrations the partner refused (`register_failed`): its answer, not a failure of ours
    refused: int = 0
    #: why the step stopped early: the partner's circuit breaker is open (issue 21)
    stopped: str | None = None

    def add(self, label: str, example: str | None = None) -> None:
        self.processed += 1
        self.outcomes[label] += 1
        if example and len(self.examples) < EXAMPLES:
            self.examples.append(example)
