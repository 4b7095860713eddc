"""Every legacy status and what it becomes in Anubis (documented in docs/cutover.md).

The legacy services (Kroton's Node service, seed 001; Estácio's export) use the words of the
original state machine. An imported student must (1) never be registered again by Anubis and
(2) be followed until a final status when the legacy registered it. So:

| legacy | ours | why |
|---|---|---|
| legacy | ours | holds the CPF | then |
|---|---|---|---|
| `registered` | `registered` | yes | checked (`check_job`) until final |
| `awaiting_register` | `awaiting_register` | yes | checked until final |
| `enrolled` | `enrolled` | yes | final, as ours |
| `dropped` | `dropped` | no | final |
| `failed` | `failed` | no | kept (1) |
| `register_failed` | `register_failed` | no | kept (1) |
| `empty_course` | `empty_course` | no | kept (1) |
| `to_sync`, `to_register`, `course_failed` | `taken_over` | no | not sent: its order is (2) |

(1) The legacy's failure is kept as it was; the CPF is free, so the student's order is sent by
Anubis when it is paid after the go-live point, or when an operator takes its range over
(`anubis takeover`): that is how such a student is requeued (the imported row has no order
to send). (2) The same way: the student's order, not the imported row, is what Anubis sends.

Pure data and rules, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from anubis_dagster.core.states import Status, holds_cpf


@dataclass(frozen=True)
class Mapped:
    status: Status
    meaning: str

    @property
    def holds_cpf(self) -> bool:
        return holds_cpf(self.status)

    @property
    def order_is_anubis(self) -> bool:
        """The legacy did not (or no longer) hold this student: Anubis sends the order itself,
        (1) and (2) of the table, so the imported row must not take the order's own id."""
        return self.status in ANUBIS_SENDS_THE_ORDER


S = Status
#: the imported statuses whose student's order Anubis sends itself ((1) and (2) above)
ANUBIS_SENDS_THE_ORDER = frozenset({S.TAKEN_OVER, S.FAILED, S.REGISTER_FAILED, S.EMPTY_COURSE})
TAKEN_OVER = "the legacy never sent it: Anubis sends the student's order"
KEPT_FAILED = "kept as the legacy left it; the student's order may be taken over"

LEGACY_STATUSES: dict[str, Mapped] = {
    "registered": Mapped(S.REGISTERED, "sent by the legacy: followed until final"),
    "awaiting_register": Mapped(S.AWAITING_REGISTER, "sent by the legacy: followed until final"),
    "enrolled": Mapped(S.ENROLLED, "final at the partner"),
    "dropped": Mapped(S.DROPPED, "final at the partner"),
    "failed": Mapped(S.FAILED, KEPT_FAILED),
    "register_failed": Mapped(S.REGISTER_FAILED, KEPT_FAILED),
    "empty_course": Mapped(S.EMPTY_COURSE, KEPT_FAILED),
    "to_sync": Mapped(S.TAKEN_OVER, TAKEN_OVER),
    "to_register": Mapped(S.TAKEN_OVER, TAKEN_OVER),
    "course_failed": Mapped(S.TAKEN_OVER, TAKEN_OVER),
}


def map_status(legacy_status: str) -> Mapped | None:
    """Ours for a legacy status word (case and surrounding blanks ignored); None: unknown."""
    return LEGACY_STATUSES.get(legacy_status.strip().lower())


def synthetic_order_id(legacy_id: str, cpf: str, key: bytes | None = None) -> int:
    """The `order_id` of an imported row that must not hold a real order's id (the legacy knows
    none, or Anubis sends that order itself): minus the legacy's numeric id (Kroton's
    `subscriptions.id`, the CSV's order id), else minus a keyed hash of the CPF (HMAC-SHA256
    under `key`, SHA-256 without one), never the CPF itself: an order id is shown, published
    and kept after erasure. Negative, so it never meets a real order's id; stable, so a second
    import finds it."""
    text = legacy_id.strip()
    if text.isdigit() and 0 < int(text) < 2**62:
        return -int(text)
    message = b"anubis-legacy-order:" + cpf.encode()
    digest = (
        hmac.new(key, message, hashlib.sha256).digest() if key else hashlib.sha256(message).digest()
    )
    return -(int.from_bytes(digest[:7], "big") + 1)
