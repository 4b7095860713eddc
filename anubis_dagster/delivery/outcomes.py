"""Whether a registration may have reached the partner: decided here, once, for every IES.

Adapters interpret answers; they cannot be trusted to notice every way an answer gets lost (a
connection closed after the partner acted, a body cut short, a 2xx they could not read). The
delivery layer sees every write request the step made (`CallContext.writes_since`) and applies
the rule of DESIGN.md: unless the adapter came back with a definite answer, any write that may
have reached the partner leaves the subscription *unknown* — marked as being sent, so nothing is
resent before the partner is asked (or, where it cannot be asked, before a person looks).
Plain functions, tested without Dagster or HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class WriteResult(Protocol):
    """What this module needs of an HTTP result (`clients.http.HttpResult`)."""

    @property
    def may_have_acted(self) -> bool: ...


def write_may_have_acted(writes: Sequence[WriteResult]) -> bool:
    """Any write of the step that does not prove the partner did nothing."""
    return any(w.may_have_acted for w in writes)


def still_unknown(
    *,
    definite: bool,
    writes: Sequence[WriteResult],
    adapter_says_unknown: bool,
    unresolved_before: bool,
) -> bool:
    """Whether the "being sent" marker must stay after this step.

    - a definite answer from the partner (registered, refused, found) settles it;
    - otherwise a write that may have acted makes it unknown, and so does an earlier unknown
      that this step did not settle (e.g. resent to a partner that refuses duplicates, but the
      resend itself never arrived);
    - the adapter's own `unknown` counts only when something was written.
    """
    if definite:
        return False
    if write_may_have_acted(writes):
        return True
    return unresolved_before or (adapter_says_unknown and bool(writes))


#: a step's outcome for a student it failed and will try again (the error says why)
RETRY = "retry"


def step_outcome(before: str, after: str, label: str, *, transient: bool) -> str:
    """One name per outcome wherever a step's result shows (run metadata, run alerts, their
    examples, the digest): the status the student moved to, whatever the partner's code
    (Estácio's MS002 and MS004 are both `register_failed`; its ATL016 is `registered`);
    `retry` for a failure tried again later in the same status; else the step's own word
    (`deferred`, `ignored`, `unchanged`…). Why is in the example's text, never in the name."""
    if after != before:
        return after
    if transient:
        return RETRY
    return label
