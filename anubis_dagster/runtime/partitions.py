"""Jobs partitioned by integration: a launch without an integration is refused before the run
exists, and a run whose partition disagrees with its config does nothing.

Why the integration is in the run config: Dagster validates a launch (Launchpad, GraphQL,
sensors, `anubis run`) only through its run config, in the code server, before it creates the
run; the partition is a run tag, which that check never sees. So each partition's run config
names its integration (`ops: {<first op>: {config: {integration: kroton}}}`), written into the
Launchpad's editor when the operator picks the partition, and the field refuses an empty value
or one that is not an integration, naming the choices, at launch: no run, no alert.

What the config cannot see is whether the run carries a partition: a config typed by hand
with no partition picked (after Dagster's "Are you sure?"), or a partition other than the
config's. Such a run is refused by its first op before it touches anything
(`partition_integration`), tagged `anubis/refused`, and the run-failure alert skips it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import cache
from typing import Any

import dagster as dg
from dagster._config import ConfigScalar, ConfigScalarKind
from dagster._config.errors import PostProcessingError

from anubis_dagster.runtime.launchpad import checked_schema
from anubis_dagster.runtime.run_tags import INTEGRATION_TAG

#: the op config field naming the run's integration
INTEGRATION_FIELD = "integration"
PARTITION_TAG = "dagster/partition"
#: set on a run refused by its first op (no partition, or one its config disagrees with): the
#: run-failure alert skips it, as nothing was done
REFUSED_TAG = "anubis/refused"


def choices(keys: Iterable[str]) -> str:
    return ", ".join(sorted(keys)) or "none configured"


def integration_problem(value: object, keys: Iterable[str]) -> str | None:
    """What is wrong with `value` as the integration of a launch (None: nothing)."""
    keys = set(keys)
    text = str(value or "").strip()
    if not text:
        return (
            "no integration: pick one in the Partition box (it writes `integration:` here), "
            f"one of: {choices(keys)}"
        )
    if text not in keys:
        return f"{text!r} is not an integration; pick one of: {choices(keys)}"
    return None


def run_problem(partition: str | None, configured: str, keys: Iterable[str]) -> str | None:
    """Why a started run of a partitioned job must do nothing (None: it may go on)."""
    keys = set(keys)
    if not partition:
        return (
            f"this run has no partition: launch it again with the integration picked in the "
            f"Partition box ({choices(keys)}); nothing was done"
        )
    if partition not in keys:
        return f"partition {partition!r} is not an integration ({choices(keys)}); nothing was done"
    if configured != partition:
        return (
            f"partition {partition!r} but the config says integration: {configured!r}; launch "
            f"again with the two the same; nothing was done"
        )
    return None


class _IntegrationScalar(ConfigScalar):
    """A string that must name one of the integrations, checked at launch."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        super().__init__(
            key="anubis.integration." + "_".join(keys),
            # the Launchpad shows the type's name beside the field: the choices
            given_name=f"Integration ({' | '.join(keys)})",
            scalar_kind=ConfigScalarKind.STRING,
        )
        self._keys = keys

    def post_process(self, value: Any) -> Any:
        problem = integration_problem(value, self._keys)
        if problem:
            raise PostProcessingError(f"{INTEGRATION_FIELD}: {problem}")
        return str(value).strip()


@cache
def _integration_scalar(keys: tuple[str, ...]) -> _IntegrationScalar:
    return _IntegrationScalar(keys)


def partitioned_schema(model: type[dg.Config], keys: Iterable[str]) -> Mapping[str, dg.Field]:
    """The op config of `model` (checked at launch) plus the run's `integration`."""
    return {
        INTEGRATION_FIELD: dg.Field(
            _integration_scalar(tuple(sorted(set(keys)))),
            default_value="",
            description="the run's integration: set by picking the partition",
        ),
        **checked_schema(model),
    }


def settings(model: type[dg.Config], op_config: Mapping[str, Any]) -> Any:
    """The op's settings without the `integration` field (the partition's business)."""
    return model.model_validate({k: v for k, v in op_config.items() if k != INTEGRATION_FIELD})


def integration_partitions(
    keys: Iterable[str], op_name: str, tags_for_key: Callable[[str], Mapping[str, str]]
) -> dg.PartitionedConfig[dg.StaticPartitionsDefinition]:
    """A partition per integration whose run config names it in `op_name`'s config."""
    return dg.PartitionedConfig(
        partitions_def=dg.StaticPartitionsDefinition(sorted(set(keys))),
        run_config_for_partition_key_fn=lambda key: partition_run_config(op_name, key),
        tags_for_partition_key_fn=lambda key: dict(tags_for_key(key)),
    )


def partition_run_config(op_name: str, key: str, extra: Mapping[str, Any] | None = None) -> dict:
    """The run config of partition `key`, with `extra` op settings (tests, `anubis run`)."""
    return {"ops": {op_name: {"config": {**(extra or {}), INTEGRATION_FIELD: key}}}}


def partition_integration(context: dg.OpExecutionContext) -> str:
    """The run's integration, from its first op: the partition, when the config agrees. A run
    without a partition, one that is not among its job's, or whose config disagrees, is tagged
    refused and fails here with one line, before anything is read or sent."""
    partitions = context.job_def.partitions_def
    keys = partitions.get_partition_keys() if partitions is not None else []
    tags = context.run.tags
    configured = str(context.op_config.get(INTEGRATION_FIELD) or "")
    problem = run_problem(tags.get(PARTITION_TAG), configured, keys)
    if problem is None:
        return configured
    context.instance.add_run_tags(context.run_id, {REFUSED_TAG: "true", INTEGRATION_TAG: "none"})
    raise dg.Failure(description=problem, allow_retries=False)


def was_refused(run: dg.DagsterRun) -> bool:
    return run.tags.get(REFUSED_TAG) == "true"
