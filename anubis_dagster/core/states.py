"""Every subscription status and every allowed move between them, in one place.

The statuses are the original services' (Kroton's machine, Estácio's consent step) plus what
intake needs (`invalid`, `duplicate`). No op or adapter assigns `status` by hand: they call
`anubis_dagster.db.transitions.transition`, which checks `is_allowed` here and writes the event
row. Keeping this module free of I/O lets the rules be tested on their own.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    # intake
    INVALID = "invalid"  # failed validation; field-level reasons in the event row
    DUPLICATE = "duplicate"  # another active subscription holds this CPF for the integration
    # Estácio: LGPD consent before registering
    TO_SYNC_LGPD = "to_sync_lgpd"
    SYNC_LGPD_FAILED = "sync_lgpd_failed"
    # Kroton: course sync
    TO_SYNC = "to_sync"
    COURSE_FAILED = "course_failed"
    EMPTY_COURSE = "empty_course"
    # registration
    TO_REGISTER = "to_register"
    AWAITING_REGISTER = "awaiting_register"
    REGISTER_FAILED = "register_failed"
    REGISTERED = "registered"
    #: a registration may have reached a partner that offers no way to ask: held for an
    #: operator, never sent again on its own (requeue once the partner confirms it is absent)
    UNKNOWN = "unknown"
    # going live (issue 20, `legacy/`): an order paid before its integration's go-live point,
    # never sent unless an operator takes it over (`anubis takeover`)
    BEFORE_GO_LIVE = "before_go_live"
    #: imported from the legacy, which never sent it: Anubis sends the student's order instead
    TAKEN_OVER = "taken_over"
    # follow-up at the IES
    ENROLLED = "enrolled"
    DROPPED = "dropped"
    # dead letter / IES-side failure
    FAILED = "failed"
    # personal data removed (issue 22): on the student's request (LGPD art. 18), from any
    # status; or by retention, an open subscription with no activity past its maximum age
    ERASED = "erased"
    EXPIRED = "expired"
    #: shadow run (issue 20, `legacy/shadow.py`): everything was done up to the send, which was
    #: withheld ("would send" recorded); the legacy service is the sender of this student
    SHADOWED = "shadowed"


S = Status

#: what each status means to an operator, in a few words: the lookup shows it beside the
#: status, and docs/operating.md's glossary says the same at length
MEANINGS: dict[Status, str] = {
    S.INVALID: "rejected at intake: the order's data is wrong at the source",
    S.DUPLICATE: "not sent: another active subscription holds this CPF here",
    S.TO_SYNC_LGPD: "waiting to record the LGPD consent",
    S.SYNC_LGPD_FAILED: "the consent step failed; retried on the schedule",
    S.TO_SYNC: "waiting for the course sync",
    S.COURSE_FAILED: "the course sync failed; retried on the schedule",
    S.EMPTY_COURSE: "refused: the partner's catalog has no matching offer",
    S.TO_REGISTER: "waiting to be sent",
    S.AWAITING_REGISTER: "accepted by the partner, being processed there",
    S.REGISTER_FAILED: "refused by the partner (its code and message below)",
    S.REGISTERED: "registered at the partner",
    S.UNKNOWN: "held for review: the registration may have reached the partner",
    S.BEFORE_GO_LIVE: "paid before the go-live point: never sent unless taken over",
    S.TAKEN_OVER: "imported from the legacy, which never sent it; its order is sent instead",
    S.ENROLLED: "enrolled at the university",
    S.DROPPED: "registered, then reported absent or disqualified by the partner",
    S.FAILED: "dead letter: retries ran out or a final error; requeue once fixed",
    S.ERASED: "personal data erased on the student's request",
    S.EXPIRED: "closed by retention after too long without activity",
    S.SHADOWED: "shadow run: would have been sent; the legacy service sent it",
}

#: Statuses a new subscription may be created in.
INITIAL_STATUSES = frozenset(
    {S.TO_SYNC, S.TO_SYNC_LGPD, S.TO_REGISTER, S.INVALID, S.DUPLICATE, S.BEFORE_GO_LIVE}
)

_TRANSITIONS: dict[Status, frozenset[Status]] = {
    # an invalid order corrected at the source is validated again
    S.INVALID: frozenset(
        {S.INVALID, S.TO_SYNC, S.TO_SYNC_LGPD, S.TO_REGISTER, S.DUPLICATE, S.BEFORE_GO_LIVE}
    ),
    S.DUPLICATE: frozenset(),
    # taken over by an operator: sent as a new order would be, or a duplicate of a CPF held
    S.BEFORE_GO_LIVE: frozenset({S.TO_SYNC, S.TO_SYNC_LGPD, S.TO_REGISTER, S.DUPLICATE, S.INVALID}),
    S.TAKEN_OVER: frozenset(),
    S.TO_SYNC_LGPD: frozenset({S.TO_REGISTER, S.SYNC_LGPD_FAILED, S.FAILED}),
    S.SYNC_LGPD_FAILED: frozenset({S.TO_REGISTER, S.SYNC_LGPD_FAILED, S.FAILED}),
    S.TO_SYNC: frozenset({S.TO_REGISTER, S.EMPTY_COURSE, S.COURSE_FAILED, S.FAILED}),
    S.COURSE_FAILED: frozenset({S.TO_REGISTER, S.EMPTY_COURSE, S.COURSE_FAILED, S.FAILED}),
    S.EMPTY_COURSE: frozenset(),
    S.TO_REGISTER: frozenset(
        {S.REGISTERED, S.AWAITING_REGISTER, S.REGISTER_FAILED, S.FAILED, S.TO_REGISTER, S.UNKNOWN}
        | {S.SHADOWED}
    ),
    S.UNKNOWN: frozenset(),
    S.AWAITING_REGISTER: frozenset({S.REGISTERED, S.FAILED, S.AWAITING_REGISTER}),
    S.REGISTERED: frozenset({S.ENROLLED, S.DROPPED, S.FAILED, S.REGISTERED}),
    S.REGISTER_FAILED: frozenset(),
    S.ENROLLED: frozenset(),
    S.DROPPED: frozenset(),
    S.FAILED: frozenset(),
    S.ERASED: frozenset(),
    S.EXPIRED: frozenset(),
    S.SHADOWED: frozenset(),  # only a takeover releases it (docs/shadow.md)
}

#: Where an operator may send a subscription back to (requeue from the Launchpad).
REQUEUE_TARGETS = frozenset({S.TO_SYNC, S.TO_SYNC_LGPD, S.TO_REGISTER, S.AWAITING_REGISTER})
#: Statuses an operator may requeue from: the dead letter and the permanent refusals, once the
#: cause has been fixed (e.g. an offer code corrected).
REQUEUEABLE = frozenset(
    {S.FAILED, S.REGISTER_FAILED, S.EMPTY_COURSE, S.COURSE_FAILED, S.SYNC_LGPD_FAILED, S.UNKNOWN}
    | {S.SHADOWED}  # only by a takeover (`legacy.shadow.release_shadowed`), not the requeue
)

#: No more work will happen on these without an operator.
FINAL_STATUSES = frozenset(s for s, targets in _TRANSITIONS.items() if not targets) | {
    S.BEFORE_GO_LIVE  # only an operator's takeover moves it
}

#: Statuses in which the subscription no longer holds the student's CPF for its integration:
#: a new paid order for the same CPF may start a new subscription.
RELEASES_CPF = frozenset(
    {
        S.INVALID,
        S.DUPLICATE,
        S.EMPTY_COURSE,
        S.REGISTER_FAILED,
        S.DROPPED,
        S.FAILED,
        S.BEFORE_GO_LIVE,
        S.TAKEN_OVER,
    }
    | {S.ERASED, S.EXPIRED}
)

#: Where personal-data removal moves a subscription, outside the machine's ordinary moves
#: (`maintenance/privacy.py`, `maintenance/pii.py`): `erased` from any status but itself,
#: `expired` from any status that is not final yet.
_RETIRING = {
    S.ERASED: frozenset(set(S) - {S.ERASED}),
    S.EXPIRED: frozenset(set(S) - FINAL_STATUSES),
}


class IllegalTransition(ValueError):
    """Raised when code tries a status change the machine does not allow: a bug, not data."""


def is_allowed(current: Status | None, target: Status, *, requeue: bool = False) -> bool:
    """Whether `current` → `target` is a legal move (`current` None = creation)."""
    if current is None:
        return target in INITIAL_STATUSES
    if requeue:
        return current in REQUEUEABLE and target in REQUEUE_TARGETS
    if target in _RETIRING:
        return current in _RETIRING[target]
    return target in _TRANSITIONS[current]


def check_transition(current: Status | None, target: Status, *, requeue: bool = False) -> None:
    if not is_allowed(current, target, requeue=requeue):
        raise IllegalTransition(f"illegal status change {current} → {target}")


def holds_cpf(status: Status) -> bool:
    return status not in RELEASES_CPF
