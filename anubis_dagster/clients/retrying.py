"""Quick retries of one partner call (tenacity): what a failed attempt allows right away, and
how long to pause first. Apart from `http.py`, which sends one attempt and reports it; after
the last quick retry the persisted retry schedule takes over.

What may be tried again now, per the delivery rules (DESIGN.md, "Unknown outcome"): a 429 or a
request that provably never left (connection error), writes included; a 401 once, right after
the token is dropped; any other unknown outcome only for a read, since a write may have acted
and the caller must ask the partner first."""

from __future__ import annotations

from collections.abc import Callable

from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_attempt

from anubis_dagster.clients.results import UNKNOWN_OUTCOMES, HttpOutcome, HttpResult

#: first pause between quick retries; doubles each time, at most 4 s
QUICK_RETRY_BASE_SECONDS = 0.5


def with_quick_retries(
    send_once: Callable[[], HttpResult],
    *,
    tries: int,
    write: bool,
    on_unauthorized: Callable[[], None] | None,
) -> HttpResult:
    """`send_once` up to `tries` times, as long as what happened allows another try now; the
    last result. `on_unauthorized` drops the token before a 401's one retry (None: a 401 is
    the answer at once)."""
    refreshed = False  # a second 401 after a fresh token is an answer
    retry_now = False

    def attempt() -> HttpResult:
        nonlocal refreshed, retry_now
        result = send_once()
        retry_now = False
        if result.outcome is HttpOutcome.UNAUTHORIZED and on_unauthorized and not refreshed:
            refreshed = retry_now = True
            on_unauthorized()
        return result

    def should_retry(result: HttpResult) -> bool:
        if result.outcome in (HttpOutcome.RATE_LIMITED, HttpOutcome.CONNECTION_ERROR):
            return True  # nothing was processed: safe for writes too
        if result.outcome is HttpOutcome.UNAUTHORIZED:
            return retry_now
        # after any other failure a write may have acted: the caller must ask first
        return not write and result.outcome in UNKNOWN_OUTCOMES

    retrying = Retrying(
        stop=stop_after_attempt(tries),
        wait=_quick_retry_wait,
        retry=retry_if_result(should_retry),
        retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
        reraise=True,
    )
    result: HttpResult = retrying(attempt)
    return result


def _quick_retry_wait(state: RetryCallState) -> float:
    """The pause before the next quick retry: none after a 429 (the limiter itself waits out
    the block) or a 401 (the token was just dropped), else doubling, at most 4 s."""
    result = state.outcome.result() if state.outcome else None
    if result is not None and result.outcome in (
        HttpOutcome.RATE_LIMITED,
        HttpOutcome.UNAUTHORIZED,
    ):
        return 0.0
    return min(4.0, QUICK_RETRY_BASE_SECONDS * 2 ** (state.attempt_number - 1))
