"""Ops retry unexpected exceptions, but a Terminate (an interrupt) is not retried.

Dagster turns an interrupt into a retry of an op that has a `RetryPolicy`: a terminated delivery
run registered the rest of its batch and ended SUCCESS (seen on the production topology). Our
ops carry no policy; `retry_unexpected_errors` asks for retries of exceptions only."""

# No `from __future__ import annotations`: Dagster reads the ops' annotations at runtime.

import dagster as dg
import pytest
from dagster._core.errors import DagsterExecutionInterruptedError

from anubis_dagster.definitions import defs as code_location
from anubis_dagster.runtime.policies import OP_MAX_RETRIES, retry_unexpected_errors

defs = code_location()  # the lazy code location, built as Dagster builds it

CALLS: list[str] = []


def _job(error: BaseException) -> dg.JobDefinition:
    @dg.op
    @retry_unexpected_errors
    def flaky(context: dg.OpExecutionContext) -> None:
        CALLS.append(context.run_id)
        raise error

    @dg.job(executor_def=dg.in_process_executor)
    def one_op() -> None:
        flaky()

    return one_op


def _event_types(result: dg.ExecuteInProcessResult) -> list[str]:
    return [event.event_type_value for event in result.all_events]


def test_an_unexpected_exception_is_retried_by_the_policy() -> None:
    CALLS.clear()
    result = _job(ValueError("database went away")).execute_in_process(raise_on_error=False)
    assert not result.success
    assert len(CALLS) == OP_MAX_RETRIES + 1
    assert _event_types(result).count("STEP_UP_FOR_RETRY") == OP_MAX_RETRIES


def test_the_exception_a_retry_carries_is_masked() -> None:
    """Any op's unexpected exception (intake's too) reaches the run log masked: a driver's
    DETAIL line may quote a CPF or an e-mail."""
    CALLS.clear()
    error = ValueError(
        "duplicate key value: DETAIL: Key (cpf)=(52998224725) exists; e-mail maria@example.com"
    )
    result = _job(error).execute_in_process(raise_on_error=False)
    assert not result.success
    logged = " ".join(
        str(event.event_specific_data) + str(event.message) for event in result.all_events
    )
    assert "STEP_UP_FOR_RETRY" in _event_types(result)
    assert "52998224725" not in logged and "maria@example.com" not in logged
    assert "duplicate key value" in logged  # the rest of the text is kept


def test_a_failure_that_forbids_retries_fails_at_once() -> None:
    CALLS.clear()
    failure = dg.Failure("credentials refused", allow_retries=False)
    result = _job(failure).execute_in_process(raise_on_error=False)
    assert not result.success and len(CALLS) == 1
    assert "STEP_UP_FOR_RETRY" not in _event_types(result)


def test_an_interrupt_is_not_retried() -> None:
    """What Terminate raises in the run worker: the step fails once and the run stops."""
    CALLS.clear()
    with pytest.raises(DagsterExecutionInterruptedError):
        _job(DagsterExecutionInterruptedError()).execute_in_process()
    assert len(CALLS) == 1


@pytest.mark.parametrize("job_name", ["deliver_job", "check_job", "intake_job"])
def test_no_op_of_the_real_jobs_has_a_retry_policy(job_name: str) -> None:
    """A `RetryPolicy` on any op would bring back the retried Terminate."""
    job = defs.resolve_job_def(job_name)
    assert job.nodes
    assert [node.name for node in job.nodes if node.definition.retry_policy is not None] == []
    assert job.op_retry_policy is None
