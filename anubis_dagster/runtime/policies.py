"""How ops retry an unexpected exception, without retrying a Terminate.

Ops are written to be safe to run twice (idempotent intake, leases and the "being sent" marker
for deliveries), so an unexpected exception — a database failover, a dropped connection — is
retried a couple of times before the run fails and alerts. `ANUBIS_OP_RETRY_DELAY_SECONDS`
shortens the wait (the test suite sets it to 0).

Ops carry no `dg.RetryPolicy`: Dagster turns the interrupt of a Terminate into a retry of an op
that has one, so the step ran again and a terminated run finished as if nobody had asked.
`@retry_unexpected_errors` (under `@dg.op`) raises `RetryRequested` with the same policy for
exceptions only: an interrupt passes through and the run ends CANCELED, and a `Failure` with
`allow_retries=False` fails the step at once. The exception a retry carries is masked
(`scrub_exception`): its text reaches the run log and the failure alert.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import dagster as dg

from anubis_dagster.core.masking import scrub_exception
from anubis_dagster.settings import get_settings

#: retries of an op after an unexpected exception, before the run fails
OP_MAX_RETRIES = 2


def op_retry_policy() -> dg.RetryPolicy:
    """The retries of an op's unexpected exception; `ANUBIS_OP_RETRY_DELAY_SECONDS` is read
    when a retry is asked for, not when this module is imported."""
    return dg.RetryPolicy(
        max_retries=OP_MAX_RETRIES,
        delay=get_settings().anubis_op_retry_delay_seconds,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


OpFunction = TypeVar("OpFunction", bound=Callable[..., Any])


#: set on an op's function by `retry_unexpected_errors` and `scrub_errors`: its exceptions are
#: masked before Dagster stores them (a test walks every op of the definitions for it)
SCRUBBED = "__anubis_scrubbed__"


def retry_unexpected_errors(op_function: OpFunction) -> OpFunction:
    """Decorate an op's function (whose first parameter is its context), under `@dg.op`."""

    @functools.wraps(op_function)
    def wrapper(context: dg.OpExecutionContext, *args: Any, **kwargs: Any) -> Any:
        with retried_on_unexpected_errors(context):
            return op_function(context, *args, **kwargs)

    setattr(wrapper, SCRUBBED, True)
    return wrapper  # type: ignore[return-value]


def scrub_errors(op_function: OpFunction) -> OpFunction:
    """Decorate an op's or asset's function, under `@dg.op`/`@dg.asset`, for ops that must not
    be retried blindly (an alert, a report): an exception fails the step as before, with its
    text and its causes' masked first (a driver's DETAIL or a partner's message may quote a
    CPF or a name; the failure and its alert carry that text)."""

    if inspect.isgeneratorfunction(op_function):  # an asset yielding results and checks

        @functools.wraps(op_function)
        def generator(*args: Any, **kwargs: Any) -> Any:
            with _scrubbed():
                yield from op_function(*args, **kwargs)

        setattr(generator, SCRUBBED, True)
        return generator  # type: ignore[return-value]

    @functools.wraps(op_function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _scrubbed():
            return op_function(*args, **kwargs)

    setattr(wrapper, SCRUBBED, True)
    return wrapper  # type: ignore[return-value]


@contextmanager
def _scrubbed() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        scrubbed = scrub_exception(exc)
        if scrubbed is exc:
            raise
        raise scrubbed from None


@contextmanager
def retried_on_unexpected_errors(context: dg.OpExecutionContext) -> Iterator[None]:
    """Wrap an op's body: an exception asks Dagster for a retry by `op_retry_policy()`."""
    try:
        yield
    except dg.RetryRequested:
        raise
    except dg.Failure as failure:
        if not failure.allow_retries:
            raise
        raise _retry(context) from scrub_exception(failure)
    except Exception as exc:
        # the retry (and the failure once retries are spent) stores the cause's text in the
        # run log: masked first, as the delivery ops do (a driver's DETAIL may quote a CPF)
        raise _retry(context) from scrub_exception(exc)


def _retry(context: dg.OpExecutionContext) -> dg.RetryRequested:
    attempt = context.retry_number + 1
    policy = op_retry_policy()
    return dg.RetryRequested(
        max_retries=policy.max_retries, seconds_to_wait=policy.calculate_delay(attempt)
    )
