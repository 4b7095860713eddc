"""How runs are launched: `anubis run`'s runs that the UI treats like the daemon's, and the
production run launcher (`ProcessRunLauncher`, deploy/postgres/dagster.yaml).

`execute_in_process` records a run without a code location origin: the UI cannot link it to its
job, count it in the partition status, or re-execute it. Here the run is created with the
origin of the `anubis` code location (the location name every workspace uses: `workspace.yaml`
and `deploy/postgres/workspace.yaml`) and the job's Python origin, then executed in this
process, as a run worker would (`dagster api execute_run` does the same after loading the code).
Partitioned runs carry the partition's tags (queue slot, max runtime) as sensor runs do, and
every run says who launched it (`anubis/launched_by`: `anubis run`, `anubis digest`), since
Dagster's UI would otherwise call it "Manually launched".
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import execute_run
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._grpc.types import (
    CanCancelExecutionRequest,
    CanCancelExecutionResult,
    CancelExecutionRequest,
    CancelExecutionResult,
)
from dagster_shared.serdes import deserialize_value

#: the code location's name in every workspace file, and its module
LOCATION_NAME = "anubis"
DEFINITIONS_MODULE = "anubis_dagster.definitions"
REPOSITORY_NAME = "__repository__"  # Dagster's name for the repository of a `Definitions`
HEALTH_CHECK_TIMEOUT_SECONDS = 10
#: the tag naming the command that launched a run outside the daemon and the Launchpad
LAUNCHED_BY_TAG = "anubis/launched_by"


@dataclass(frozen=True)
class LaunchedRun:
    run_id: str
    success: bool


def remote_job_origin(job_name: str) -> RemoteJobOrigin:
    """The origin the UI and the daemon resolve by location and job name."""
    location = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name=DEFINITIONS_MODULE,
            working_directory=os.getcwd(),
        ),
        location_name=LOCATION_NAME,
    )
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, REPOSITORY_NAME), job_name)


def execute_job_run(
    defs: dg.Definitions,
    job_name: str,
    instance: dg.DagsterInstance,
    *,
    run_config: Mapping[str, object] | None = None,
    tags: Mapping[str, str] | None = None,
    partition_key: str | None = None,
    launched_by: str = "anubis run",
) -> LaunchedRun:
    """Create the run with the code location's origin and execute it here, to the end."""
    job = defs.resolve_job_def(job_name)
    run_tags: dict[str, str] = {LAUNCHED_BY_TAG: launched_by}
    if partition_key is not None:
        if job.partitioned_config is not None:
            run_tags.update(job.partitioned_config.get_tags_for_partition_key(partition_key))
        run_tags["dagster/partition"] = partition_key
    run_tags.update(tags or {})
    config = dict(run_config or {})
    if partition_key is not None and job.partitioned_config is not None:
        partition_config = job.partitioned_config.get_run_config_for_partition_key(partition_key)
        config = merged_config(partition_config, config)
    repository = ReconstructableRepository.for_module(
        DEFINITIONS_MODULE, "defs", working_directory=os.getcwd()
    )
    run = instance.create_run_for_job(
        job_def=job,
        run_config=config,
        tags={**job.tags, **run_tags},
        remote_job_origin=remote_job_origin(job_name),
        job_code_origin=repository.get_reconstructable_job(job_name).get_python_origin(),
    )
    result = execute_run(InMemoryJob(job), run, instance)
    return LaunchedRun(run.run_id, result.success)


def merged_config(base: Mapping[str, object], extra: Mapping[str, object]) -> dict[str, object]:
    """`extra` over `base`, mapping by mapping: a partition's op config (its `integration`)
    survives the settings given for the same op, as in the Launchpad's editor."""
    merged = dict(base)
    for key, value in extra.items():
        below = merged.get(key)
        if isinstance(below, Mapping) and isinstance(value, Mapping):
            merged[key] = merged_config(below, value)
        else:
            merged[key] = value
    return merged


class ProcessRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher (each run a process of the code server that launched it) with
    a worker health check, so run monitoring resolves a dead worker within one poll.

    The code server already fails a run whose worker process died while the server lives. When
    the server died too (a container or node crash), nothing would report it until the run's
    max runtime. Here monitoring asks the server named in the run's `dagster/grpc_info` tag
    whether it still holds the run's execution: a restarted server answers no (the worker is
    gone: FAILED, and run retries relaunch it). A server that cannot be reached, and runs that
    no code server launched (`anubis run`), count as RUNNING: their max runtime still applies.

    Terminate (the UI's button, `terminateRun` in GraphQL) asks the run's code server to stop
    the worker, as Dagster's launcher does. When no live worker can hear it, the run is marked
    CANCELED at once instead of answering "Unable to terminate" and leaving the run CANCELING:
    the code server is down (its workers died with it, or survive orphaned: see `terminate`), or
    it is up but no longer holds the run (a restarted server). A worker that holds the run but
    cannot act on the request (frozen) leaves the run CANCELING until run monitoring's
    `cancel_timeout_seconds`.
    """

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        client = self._get_grpc_client_for_termination(run_id)
        if client is None:  # `anubis run` in a terminal: only that process can stop it
            self._instance.report_engine_event(
                "This run was not launched by a code server: stop the process that runs it "
                "(`anubis run`); otherwise its max runtime ends it.",
                run,
                cls=self.__class__,
            )
            return False
        try:
            reply = client.cancel_execution(CancelExecutionRequest(run_id=run_id))
            result = deserialize_value(reply, CancelExecutionResult)
        except Exception as exc:  # the code server is down: nobody can stop the worker
            return self._cancel_without_worker(
                run, f"its code server cannot be reached ({type(exc).__name__})"
            )
        if result.success:
            return True  # the worker stops at its next interruptible point and reports CANCELED
        if result.serializable_error_info is None:
            return self._cancel_without_worker(run, "its code server no longer holds its worker")
        self._instance.report_engine_event(
            f"The code server could not stop the worker: {result.serializable_error_info.message}",
            run,
            cls=self.__class__,
        )
        return False

    def _cancel_without_worker(self, run: dg.DagsterRun, why: str) -> bool:
        """Mark the run CANCELED now. A worker that survived its code server, orphaned, is
        fenced: the release-claims sensor frees its students once the run has ended, and its
        next send fails the claim check before the request leaves."""
        self._instance.report_run_canceled(run, message=f"Run canceled without its worker: {why}.")
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        client = self._get_grpc_client_for_termination(run.run_id)
        if client is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not launched by a code server")
        try:
            reply = client.can_cancel_execution(
                CanCancelExecutionRequest(run_id=run.run_id), timeout=HEALTH_CHECK_TIMEOUT_SECONDS
            )
            alive = deserialize_value(reply, CanCancelExecutionResult).can_cancel
        except Exception as exc:  # the server is down or restarting: don't judge yet
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, f"code server unreachable ({type(exc).__name__})", True
            )
        if alive:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            "the code server that launched this run no longer holds its worker "
            "(the server or the worker died)",
        )
