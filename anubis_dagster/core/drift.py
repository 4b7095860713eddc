"""Order-shape drift: a sudden share of an intake chunk refused, or unrouted, for one reason.

One bad order is the marketplace's mistake; a fifth of a chunk refused for the same reason
(`offer.uuid must be text, not a number`) is an upstream change that would stop every delivery
while each run looks green. This rule turns a chunk's counts into the drifts worth an alert;
intake (`intake.drift`) sends each at most once per reason per day. Reasons are field names
and rule messages, which never hold an order's values: no personal data reaches an alert.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

#: the scope of unrouted orders (they belong to no integration)
UNROUTED_SCOPE = "intake"


@dataclass(frozen=True)
class DriftThresholds:
    """A reason is a drift when at least `min_share` of at least `min_orders` orders have it."""

    min_share: float = 0.2
    min_orders: int = 20

    def __post_init__(self) -> None:
        if not 0 < self.min_share <= 1:
            raise ValueError(f"min_share must be in (0, 1], got {self.min_share}")
        if self.min_orders < 1:
            raise ValueError(f"min_orders must be at least 1, got {self.min_orders}")


@dataclass(frozen=True)
class Drift:
    """`count` of `total` orders of a chunk `invalid` for one integration (`scope`), or
    `unrouted` (scope `intake`), for `reason`."""

    scope: str
    kind: str  # invalid | unrouted
    reason: str
    count: int
    total: int

    @property
    def share(self) -> float:
        return self.count / self.total

    @property
    def key(self) -> str:
        """A short stable name for the once-a-day claim (reasons can be long)."""
        digest = hashlib.sha256(f"{self.kind}\n{self.reason}".encode()).hexdigest()[:16]
        return f"drift:{self.kind}:{digest}"

    def message(self) -> str:
        where = f" for {self.scope}" if self.kind == "invalid" else ""
        return (
            f"order shape changed? {self.count} of {self.total} orders {self.kind}{where}: "
            f"{self.reason}"
        )


def find_drifts(
    invalid: Mapping[tuple[str, str], int],
    decided: Mapping[str, int],
    unrouted: Mapping[str, int],
    readable: int,
    thresholds: DriftThresholds,
) -> list[Drift]:
    """The drifts of one chunk, largest share first. `invalid`: orders refused per
    (integration, reason) of the `decided` orders of that integration (created or validated
    again in this chunk); `unrouted`: orders no filter matched, per reason, of the `readable`
    orders of the chunk."""
    found: list[Drift] = []
    for (scope, reason), count in invalid.items():
        total = decided.get(scope, 0)
        found += _drift(scope, "invalid", reason, count, total, thresholds)
    for reason, count in unrouted.items():
        found += _drift(UNROUTED_SCOPE, "unrouted", reason, count, readable, thresholds)
    return sorted(found, key=lambda d: (-d.share, -d.count, d.scope, d.reason))


def _drift(
    scope: str, kind: str, reason: str, count: int, total: int, thresholds: DriftThresholds
) -> list[Drift]:
    if total < thresholds.min_orders or count <= 0 or count > total:
        return []
    if count + 1e-9 < thresholds.min_share * total:  # 7 of 35 is 20%, whatever floats say
        return []
    return [Drift(scope, kind, reason, count, total)]
