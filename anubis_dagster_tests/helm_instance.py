"""EMULATION, in Python, of the Dagster Helm chart's instance ConfigMap (`dagster.yaml`), for the
keys Anubis relies on. Not the chart at the pinned version: the packaged chart 1.13.27 cannot be
had on this machine (deploy/README.md, "Known limits", says what was tried), so `render_instance`
follows the chart's templates as stored from its repository (dagster-io/dagster, helm/dagster),
snapshots of the main branch that no release tag names:

- templates/configmap-instance.yaml (commit 99dc34fc, the newest version reachable, the one with
  the `concurrency` and `backfills` blocks): which blocks appear and when (run coordinator and
  run monitoring only with the daemon enabled, `cancel_timeout_seconds`, `max_runtime_seconds`
  and `max_resume_run_attempts` unless null, `max_retries` when set,
  `retry_on_asset_or_op_failure` whenever the key is given (`hasKey`, so `false` renders),
  sensors/schedules with `useThreads`, retention when enabled);
- templates/helpers/instance/_postgresql.tpl (3f2daa0d): the storage connection, the password
  from the env var DAGSTER_PG_PASSWORD (set by the chart from the Secret);
- templates/helpers/instance/_run-coordinator.tpl (7b875469): max_concurrent_runs (-1 when
  null), tag_concurrency_limits and dequeue_interval_seconds when set;
- templates/helpers/instance/_compute-log-manager.tpl (84842bc4): the S3 manager's keys;
- templates/helpers/instance/_run-launcher.tpl and helpers/_helpers.tpl (a07d616f):
  K8sRunLauncher with the chart's instance ConfigMap, the storage password Secret, the release
  namespace, in-cluster config, env_config_maps/env_secrets only when listed.

Those template texts were rendered with our values by Helm's own engine (Helm SDK v4.2.3, through
the PyPI package helm-python-sdk) and the result equals `render_instance`'s, block for block
(deploy/README.md, "How the keys were checked"). Only what our values use is emulated; anything
else raises, so a new key in the values cannot silently fall outside the emulation. The result
is then validated by Dagster's own instance schema and each configured class's config schema
(`validate_with_dagster`). test_deploy.py renders the real chart instead where one is given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

RELEASE = "anubis"
CHART = "dagster"

#: the chart's defaults for the keys the instance template reads and our values leave out
CHART_DEFAULTS: dict[str, Any] = {
    "scheduler": {"type": "DagsterDaemonScheduler"},
    "runLauncher": {"type": "K8sRunLauncher", "config": {"k8sRunLauncher": {}}},
    "computeLogManager": {"type": "NoOpComputeLogManager", "config": {}},
    "pythonLogs": {},
    "additionalInstanceConfig": {},
    "global": {"dagsterHome": "/opt/dagster/dagster_home"},
}


def fullname(release: str = RELEASE) -> str:
    """`dagster.fullname`: the release name, or release-chart when it does not contain it."""
    return release if CHART in release else f"{release}-{CHART}"


def _postgresql(values: dict[str, Any]) -> dict[str, Any]:
    pg = values["postgresql"]
    db: dict[str, Any] = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams") or {},
    }
    if pg.get("postgresqlScheme"):
        db["scheme"] = pg["postgresqlScheme"]
    return {"postgres_db": db}


def _run_launcher(values: dict[str, Any], namespace: str) -> dict[str, Any]:
    launcher = values["runLauncher"]
    if launcher["type"] != "K8sRunLauncher":
        raise NotImplementedError(f"emulated: K8sRunLauncher only, not {launcher['type']}")
    k8s = launcher["config"]["k8sRunLauncher"]
    config: dict[str, Any] = {
        "load_incluster_config": k8s.get("loadInclusterConfig", True),
        "job_namespace": k8s.get("jobNamespace") or namespace,
        "image_pull_policy": k8s.get("imagePullPolicy", "Always"),
        "service_account_name": f"{fullname()}",
        "dagster_home": values["global"]["dagsterHome"],
        "instance_config_map": f"{fullname()}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    # rendered only when the list is not empty, each item's `name`
    for key, name in (("envConfigMaps", "env_config_maps"), ("envSecrets", "env_secrets")):
        names = [item["name"] for item in k8s.get(key) or [] if "name" in item]
        if names:
            config[name] = names
    if k8s.get("resources"):
        config["resources"] = k8s["resources"]
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def _run_coordinator(values: dict[str, Any]) -> dict[str, Any]:
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    if coordinator["type"] != "QueuedRunCoordinator":
        raise NotImplementedError(f"emulated: QueuedRunCoordinator only, not {coordinator['type']}")
    queued = coordinator["config"]["queuedRunCoordinator"]
    unknown = set(queued) - {"maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds"}
    if unknown:
        raise NotImplementedError(f"not emulated: queuedRunCoordinator.{sorted(unknown)}")
    max_runs = queued.get("maxConcurrentRuns")
    config: dict[str, Any] = {"max_concurrent_runs": -1 if max_runs is None else max_runs}
    if queued.get("tagConcurrencyLimits"):
        config["tag_concurrency_limits"] = queued["tagConcurrencyLimits"]
    if queued.get("dequeueIntervalSeconds"):
        config["dequeue_interval_seconds"] = queued["dequeueIntervalSeconds"]
    return {
        "module": "dagster.core.run_coordinator",
        "class": "QueuedRunCoordinator",
        "config": config,
    }


S3_KEYS = {
    "bucket": "bucket",
    "localDir": "local_dir",
    "prefix": "prefix",
    "useSsl": "use_ssl",
    "verifyCertPath": "verify_cert_path",
    "endpointUrl": "endpoint_url",
    "skipEmptyFiles": "skip_empty_files",
    "uploadInterval": "upload_interval",
    "uploadExtraArgs": "upload_extra_args",
    "showUrlOnly": "show_url_only",
    "region": "region",
}


def _compute_logs(values: dict[str, Any]) -> dict[str, Any]:
    manager = values["computeLogManager"]
    if manager["type"] == "NoOpComputeLogManager":
        return {
            "module": "dagster.core.storage.noop_compute_log_manager",
            "class": "NoOpComputeLogManager",
        }
    if manager["type"] != "S3ComputeLogManager":
        raise NotImplementedError(f"emulated: S3ComputeLogManager only, not {manager['type']}")
    s3 = manager["config"]["s3ComputeLogManager"]
    unknown = set(s3) - set(S3_KEYS) - {"verify"}
    if unknown:
        raise NotImplementedError(f"not emulated: s3ComputeLogManager.{sorted(unknown)}")
    config: dict[str, Any] = {"bucket": s3["bucket"], "verify": s3.get("verify") is not False}
    for key, name in S3_KEYS.items():
        if key != "bucket" and s3.get(key):  # the template's `if` drops false, 0 and empty
            config[name] = s3[key]
    return {
        "module": "dagster_aws.s3.compute_log_manager",
        "class": "S3ComputeLogManager",
        "config": config,
    }


def _set(value: Any) -> bool:
    """The template's `not (kindIs "invalid" x)`: present and not null (0 and false count)."""
    return value is not None


def render_instance(values: dict[str, Any], namespace: str = RELEASE) -> dict[str, Any]:
    """The instance (`dagster.yaml` of ConfigMap `<fullname>-instance`) the chart's templates
    would render from `values` merged over CHART_DEFAULTS."""
    values = _merge(CHART_DEFAULTS, values)
    storage = _postgresql(values)
    instance: dict[str, Any] = {
        "scheduler": {"module": "dagster.core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": storage,
        },
        "run_launcher": _run_launcher(values, namespace),
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": storage,
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": storage,
        },
    }
    daemon = values["dagsterDaemon"]
    # blocks the 99dc34fc template renders from values ours leave unset: not emulated
    if daemon.get("backfills") or (values.get("concurrency") or {}).get("enabled"):
        raise NotImplementedError("not emulated: dagsterDaemon.backfills, concurrency")
    if daemon["enabled"] and daemon["runCoordinator"]["enabled"]:
        instance["run_coordinator"] = _run_coordinator(values)
    elif daemon["enabled"]:
        instance["run_coordinator"] = {
            "module": "dagster._core.run_coordinator.sync_in_memory_run_coordinator",
            "class": "SyncInMemoryRunCoordinator",
        }
    instance["compute_logs"] = _compute_logs(values)
    monitoring = daemon.get("runMonitoring") or {}
    if daemon["enabled"] and monitoring.get("enabled"):
        block: dict[str, Any] = {
            "enabled": True,
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
        }
        if _set(monitoring.get("cancelTimeoutSeconds")):
            block["cancel_timeout_seconds"] = monitoring["cancelTimeoutSeconds"]
        if _set(monitoring.get("maxResumeRunAttempts")):
            block["max_resume_run_attempts"] = monitoring["maxResumeRunAttempts"]
        if _set(monitoring.get("maxRuntimeSeconds")):
            block["max_runtime_seconds"] = monitoring["maxRuntimeSeconds"]
        block["poll_interval_seconds"] = monitoring["pollIntervalSeconds"]
        block["free_slots_after_run_end_seconds"] = monitoring["freeSlotsAfterRunEndSeconds"]
        instance["run_monitoring"] = block
    retries = daemon.get("runRetries") or {}
    if daemon["enabled"] and retries.get("enabled"):
        retry_block: dict[str, Any] = {"enabled": True}
        if retries.get("maxRetries"):
            retry_block["max_retries"] = retries["maxRetries"]
        if "retryOnAssetOrOpFailure" in retries:  # the template's `hasKey`
            retry_block["retry_on_asset_or_op_failure"] = retries["retryOnAssetOrOpFailure"]
        instance["run_retries"] = retry_block
    for key, name in (("sensors", "sensors"), ("schedules", "schedules")):
        threads = daemon.get(key) or {}
        if daemon["enabled"] and threads.get("useThreads"):
            instance[name] = {"use_threads": True}
            if threads.get("numWorkers"):
                instance[name]["num_workers"] = threads["numWorkers"]
    instance["telemetry"] = {"enabled": values["telemetry"]["enabled"]}
    retention = values.get("retention") or {}
    if retention.get("enabled"):
        instance["retention"] = {}
        if retention.get("sensor"):
            instance["retention"]["sensor"] = {
                "purge_after_days": retention["sensor"]["purgeAfterDays"]
            }
        if retention.get("schedule"):
            instance["retention"]["schedule"] = {
                "purge_after_days": retention["schedule"]["purgeAfterDays"]
            }
    instance.update(values.get("additionalInstanceConfig") or {})
    return instance


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def validate_with_dagster(instance: dict[str, Any], home: Path) -> list[str]:
    """Dagster's own checks, without a cluster: the instance schema (`dagster_instance_config`,
    what every Dagster process runs on its dagster.yaml) and, for each configured class, that
    it imports and its config passes the class's own config schema. Returns the errors."""
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes.config_class import class_from_code_pointer

    (home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    errors: list[str] = []
    try:
        dagster_instance_config(str(home))
    except Exception as exc:  # the schema's own message says what is wrong
        return [f"instance schema: {exc}"]
    # `env:` values are read when a class is configured: the pods have them (the chart sets
    # DAGSTER_PG_PASSWORD from the Secret); here a stand-in, only where none is set
    missing = {name for name in _env_names(instance) if name not in os.environ}
    os.environ.update({name: "stand-in" for name in missing})
    try:
        for key, block in instance.items():
            if not isinstance(block, dict) or "class" not in block:
                continue
            module = block["module"].replace("dagster.core.", "dagster._core.")
            cls: Any = class_from_code_pointer(module, block["class"])
            result = process_config(cls.config_type(), block.get("config") or {})
            if not result.success:
                errors.append(f"{key}: {[e.message for e in result.errors or []]}")
    finally:
        for name in missing:
            os.environ.pop(name, None)
    return errors


def _env_names(node: Any) -> set[str]:
    if isinstance(node, dict):
        if set(node) == {"env"} and isinstance(node["env"], str):
            return {node["env"]}
        return set().union(*(_env_names(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_env_names(v) for v in node)) if node else set()
    return set()
