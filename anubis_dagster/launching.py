"""Runs started by `anubis run` that the UI treats like the daemon's.

`execute_in_process` records a run without a code location origin: the UI cannot link it to its
job, count it in the partition status, or re-execute it. Here the run is created with the
origin of the `anubis` code location (the location name every workspace uses: `workspace.yaml`
and `deploy/postgres/workspace.yaml`) and the job's Python origin, then executed in this
process, as a run worker would (`dagster api execute_run` does the same after loading the code).
Partitioned runs carry the partition's tags (queue slot, max runtime) as sensor runs do.
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
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

#: the code location's name in every workspace file, and its module
LOCATION_NAME = "anubis"
DEFINITIONS_MODULE = "anubis_dagster.definitions"
REPOSITORY_NAME = "__repository__"  # Dagster's name for the repository of a `Definitions`


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
) -> LaunchedRun:
    """Create the run with the code location's origin and execute it here, to the end."""
    job = defs.resolve_job_def(job_name)
    run_tags: dict[str, str] = {}
    if partition_key is not None:
        if job.partitioned_config is not None:
            run_tags.update(job.partitioned_config.get_tags_for_partition_key(partition_key))
        run_tags["dagster/partition"] = partition_key
    run_tags.update(tags or {})
    config = dict(run_config or {})
    if partition_key is not None and job.partitioned_config is not None:
        partition_config = job.partitioned_config.get_run_config_for_partition_key(partition_key)
        config = {**partition_config, **config}
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
