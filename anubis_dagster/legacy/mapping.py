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

from dataclasses import dataclass

from anubis_dagster.core.states import Status, holds_cpf


@dataclass(frozen=True)
class Mapped:
    status: Status
    meaning: str

    @property
    def holds_cpf(self) -> bool:
        return holds_cpf(self.status)


S = Status
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


def synthetic_order_id(legacy_id: str, cpf: str) -> int:
    """The `order_id` of an imported row the legacy knows no order for: minus the legacy's
    numeric row id (Kroton's `subscriptions.id`), or minus the CPF (a CSV line with no order
    id). Negative, so it never meets a real order's id; stable, so a second import finds it."""
    text = legacy_id.strip()
    if text.isdigit() and 0 < int(text) < 2**62:
        return -int(text)
    return -int(cpf)
