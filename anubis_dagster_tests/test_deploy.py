"""The deployment files: Dockerfile, docker-compose, the Helm values. No Docker daemon or cluster
is needed: the files are checked for structure, for secrets, and against each other (the Helm
values must say what deploy/postgres/dagster.yaml says), and `docker compose config` and
`helm template` run when the tools are installed (skipped otherwise, on CI too: a missing tool
is not a failure, a failing check is)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
HELM_VALUES = DEPLOY / "helm" / "values.yaml"
INSTANCE = DEPLOY / "postgres" / "dagster.yaml"
WORKSPACE = DEPLOY / "postgres" / "workspace.yaml"

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|SUBSCRIPTION|DATABASE_URL|WEBHOOK")
LONG_RUNNING = {
    "postgres",
    "code-server",
    "daemon",
    "webserver",
    "order-feed",
    "kroton-sandbox",
    "estacio-sandbox",
    "webhook-sink",
}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name] = value
    return pairs


def _env_names(document: Any) -> set[str]:
    """Every `env: NAME` a Dagster YAML file reads."""
    found: set[str] = set()
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "env" and isinstance(value, str):
                found.add(value)
            else:
                found |= _env_names(value)
    elif isinstance(document, list):
        for item in document:
            found |= _env_names(item)
    return found


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------
def test_dockerfile_runs_the_code_server_without_the_dev_extra() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    cmd = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert cmd is not None
    assert yaml.safe_load(cmd.group(1)) == [
        "dagster", "api", "grpc", "-m", "anubis_dagster.definitions", "-h", "0.0.0.0", "-p", "4000",
    ]  # fmt: skip
    assert "[dev]" not in text and ".[dev" not in text
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE), "the image must not run as root"
    # every file the Dockerfile copies from the context exists and is let through .dockerignore
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    ]
    sources = [
        part
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE)
        for part in line.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        assert source in allowed, f"{source} is excluded by .dockerignore"
    assert "**/.env" in (ROOT / ".dockerignore").read_text(encoding="utf-8")


def test_the_default_image_holds_production_code_only() -> None:
    """The sandboxes, the sink and the demo orders are only in the `demo` target, which the
    compose file builds; the default target (the last stage) is the production image."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.MULTILINE)
    assert stages[-1][0] == "production", "the last stage (docker build's default) is production"
    production = text.split("AS production", 1)[1].split("\nFROM ", 1)[0]
    instructions = [line for line in production.splitlines() if not line.startswith("#")]
    assert not [line for line in instructions if "demo-wheels" in line or "sandboxes" in line]
    compose = _load(DEPLOY / "docker-compose.yml")
    built = [service for service in compose["services"].values() if "build" in service]
    assert built and {service["build"].get("target") for service in built} == {"demo"}


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed")
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------------------------
# docker-compose
# --------------------------------------------------------------------------------------------
def test_compose_services_health_checks_and_start_order() -> None:
    compose = _load(COMPOSE)
    services = compose["services"]
    assert set(services) == LONG_RUNNING | {"setup"}
    for name in LONG_RUNNING:
        test = services[name].get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
        assert services[name].get("restart") == "unless-stopped", name
    assert services["setup"]["restart"] == "no"  # a one-shot, gated by its exit code

    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}

    assert conditions("setup") == {"postgres": "service_healthy"}
    assert conditions("code-server") == {
        "setup": "service_completed_successfully",
        "kroton-sandbox": "service_healthy",
        "estacio-sandbox": "service_healthy",
        "webhook-sink": "service_healthy",
    }
    assert conditions("daemon") == {"code-server": "service_healthy"}
    assert conditions("webserver") == {"code-server": "service_healthy"}
    assert conditions("order-feed") == {"setup": "service_completed_successfully"}
    assert services["webserver"]["ports"] == ["${UI_PORT:-3000}:3000"]
    # the code server runs the image's default command (the Dockerfile's CMD)
    assert "command" not in services["code-server"]
    assert services["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    assert services["webserver"]["command"][0] == "dagster-webserver"
    for sandbox in ("kroton", "estacio"):
        command = services[f"{sandbox}-sandbox"]["command"]
        assert command[:3] == ["anubis-sandbox", "serve", sandbox] and "0.0.0.0" in command
    assert "0.0.0.0" in services["webhook-sink"]["command"]


def test_compose_holds_no_secret_and_wires_the_instance_files() -> None:
    compose = _load(COMPOSE)
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), name
        for variable, value in environment.items():
            if SECRET_NAME.search(variable):
                assert "${" in str(value), f"{name}: {variable} is a literal, not from .env"
        for env_file in service.get("env_file") or []:
            assert env_file == "${APP_ENV_FILE:-.env}", name
    # what the production instance and workspace files read is set for the Dagster processes
    needed = _env_names(_load(INSTANCE)) | _env_names(_load(WORKSPACE))
    assert needed, "deploy/postgres files read no variable?"
    for role in ("daemon", "webserver"):
        wiring = compose["services"][role]["environment"]
        assert needed <= set(wiring), f"{role}: not set: {sorted(needed - set(wiring))}"
    # the code server and its run workers write to the same instance
    storage = _env_names(_load(INSTANCE))
    assert storage <= set(compose["services"]["code-server"]["environment"])
    # the password reaches Dagster's storage: the instance file has no `password:` key, so
    # libpq's PGPASSWORD must be set (or the instance file must read a variable that is)
    assert "PGPASSWORD" in compose["services"]["daemon"]["environment"] or (
        "DAGSTER_PG_PASSWORD" in needed
    )


def test_env_example_has_every_required_variable_and_no_real_secret() -> None:
    example = _env_example()
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text(encoding="utf-8")))
    assert required <= set(example), f"missing in .env.example: {sorted(required - set(example))}"
    for name, value in example.items():
        if SECRET_NAME.search(name):
            placeholder = value.startswith(("sandbox-", "change-me", "http://webhook-sink:"))
            database_url = value == "" and name.endswith("DATABASE_URL")
            assert placeholder or database_url, f"{name} looks like a real secret: {value[:4]}…"
    assert example["ANUBIS_PII_RETENTION_DAYS"] == "365"
    if shutil.which("git") and (ROOT / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/.env"], cwd=ROOT)
        assert ignored.returncode == 0, "deploy/.env (the real secrets) must be git-ignored"


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=60
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def _compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "APP_ENV_FILE": os.path.relpath(env_file, DEPLOY),
    }
    return subprocess.run(
        [*command, "-f", str(COMPOSE), "--env-file", str(env_file), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        cwd=ROOT,
    )


def test_docker_compose_config_accepts_the_file() -> None:
    result = _compose_config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr


def test_docker_compose_config_refuses_a_missing_password(tmp_path: Path) -> None:
    env_file = tmp_path / "no-password.env"
    env_file.write_text("POSTGRES_USER=anubis\n", encoding="utf-8")
    result = _compose_config(env_file)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


# --------------------------------------------------------------------------------------------
# Helm values for the official chart (dagster/dagster)
# --------------------------------------------------------------------------------------------
#: Key paths of the chart's values that these values use, each checked by hand against the chart
#: source (dagster-io/dagster, helm/dagster: the pydantic schema in schema/charts/…, the
#: templates configmap-instance.yaml, helpers/instance/_postgresql.tpl and _run-coordinator.tpl,
#: and the dagster-user-deployments subchart's values.yaml). `[]` is a list item. Below a key in
#: FREE_FORM the chart takes any Kubernetes object or Dagster config.
CHART_KEYS = {
    "global", "global.postgresqlSecretName", "global.dagsterHome",
    "generatePostgresqlPasswordSecret",
    "postgresql", "postgresql.enabled", "postgresql.postgresqlHost",
    "postgresql.postgresqlUsername", "postgresql.postgresqlDatabase",
    "postgresql.postgresqlScheme", "postgresql.postgresqlParams", "postgresql.service",
    "postgresql.service.port",
    "dagster-user-deployments", "dagster-user-deployments.enabled",
    "dagster-user-deployments.enableSubchart", "dagster-user-deployments.deployments",
    "dagster-user-deployments.deployments[].name", "dagster-user-deployments.deployments[].image",
    "dagster-user-deployments.deployments[].image.repository",
    "dagster-user-deployments.deployments[].image.tag",
    "dagster-user-deployments.deployments[].image.pullPolicy",
    "dagster-user-deployments.deployments[].dagsterApiGrpcArgs",
    "dagster-user-deployments.deployments[].port",
    "dagster-user-deployments.deployments[].includeConfigInLaunchedRuns",
    "dagster-user-deployments.deployments[].includeConfigInLaunchedRuns.enabled",
    "dagster-user-deployments.deployments[].envSecrets",
    "dagster-user-deployments.deployments[].env",
    "dagster-user-deployments.deployments[].resources",
    "dagster-user-deployments.deployments[].readinessProbe",
    "dagsterWebserver", "dagsterWebserver.replicaCount", "dagsterWebserver.resources",
    "runLauncher", "runLauncher.type", "runLauncher.config", "runLauncher.config.k8sRunLauncher",
    "runLauncher.config.k8sRunLauncher.imagePullPolicy",
    "runLauncher.config.k8sRunLauncher.loadInclusterConfig",
    "runLauncher.config.k8sRunLauncher.envConfigMaps",
    "runLauncher.config.k8sRunLauncher.envSecrets",
    "runLauncher.config.k8sRunLauncher.resources",
    "dagsterDaemon", "dagsterDaemon.enabled", "dagsterDaemon.runCoordinator",
    "dagsterDaemon.runCoordinator.enabled", "dagsterDaemon.runCoordinator.type",
    "dagsterDaemon.runCoordinator.config",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.maxConcurrentRuns",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.dequeueIntervalSeconds",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits",
    "dagsterDaemon.runMonitoring", "dagsterDaemon.runMonitoring.enabled",
    "dagsterDaemon.runMonitoring.startTimeoutSeconds",
    "dagsterDaemon.runMonitoring.cancelTimeoutSeconds",
    "dagsterDaemon.runMonitoring.maxResumeRunAttempts",
    "dagsterDaemon.runMonitoring.pollIntervalSeconds",
    "dagsterDaemon.runMonitoring.freeSlotsAfterRunEndSeconds",
    "dagsterDaemon.runRetries", "dagsterDaemon.runRetries.enabled",
    "dagsterDaemon.runRetries.maxRetries", "dagsterDaemon.runRetries.retryOnAssetOrOpFailure",
    "dagsterDaemon.sensors", "dagsterDaemon.sensors.useThreads",
    "dagsterDaemon.sensors.numWorkers", "dagsterDaemon.schedules",
    "dagsterDaemon.schedules.useThreads", "dagsterDaemon.schedules.numWorkers",
    "retention", "retention.enabled", "retention.schedule", "retention.schedule.purgeAfterDays",
    "retention.sensor", "retention.sensor.purgeAfterDays",
    "telemetry", "telemetry.enabled",
}  # fmt: skip
FREE_FORM = (
    "postgresql.postgresqlParams",
    "dagster-user-deployments.deployments[].env",
    "dagster-user-deployments.deployments[].envSecrets",
    "dagster-user-deployments.deployments[].resources",
    "dagster-user-deployments.deployments[].readinessProbe",
    "dagster-user-deployments.deployments[].dagsterApiGrpcArgs",
    "dagsterWebserver.resources",
    "runLauncher.config.k8sRunLauncher.resources",
    "runLauncher.config.k8sRunLauncher.envSecrets",
    "runLauncher.config.k8sRunLauncher.envConfigMaps",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits",
    "retention.sensor.purgeAfterDays",
)


def _key_paths(node: Any, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if prefix.startswith(FREE_FORM):
        return paths
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            paths.add(path)
            paths |= _key_paths(value, path)
    elif isinstance(node, list):
        for item in node:
            paths |= _key_paths(item, f"{prefix}[]")
    return paths


def test_helm_values_use_only_keys_the_chart_has() -> None:
    unknown = _key_paths(_load(HELM_VALUES)) - CHART_KEYS
    assert not unknown, f"not a key of the dagster chart (or not verified): {sorted(unknown)}"


def test_helm_values_say_what_the_instance_file_says() -> None:
    values = _load(HELM_VALUES)
    instance = _load(INSTANCE)
    daemon = values["dagsterDaemon"]
    queue = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert daemon["runCoordinator"]["enabled"] and daemon["runCoordinator"]["type"] == (
        "QueuedRunCoordinator"
    )
    limits = instance.get("run_coordinator", {}).get("config", {}).get("tag_concurrency_limits")
    if limits is None:  # the limits may live under `concurrency.runs` instead
        limits = instance["concurrency"]["runs"]["tag_concurrency_limits"]
    assert queue["tagConcurrencyLimits"] == limits
    monitoring = instance["run_monitoring"]
    assert daemon["runMonitoring"]["enabled"] is monitoring["enabled"] is True
    assert daemon["runMonitoring"]["cancelTimeoutSeconds"] == monitoring["cancel_timeout_seconds"]
    retries = instance["run_retries"]
    assert daemon["runRetries"] == {
        "enabled": retries["enabled"],
        "maxRetries": retries["max_retries"],
        "retryOnAssetOrOpFailure": retries["retry_on_asset_or_op_failure"],
    }
    scheme = instance["storage"]["postgres"]["postgres_db"].get("scheme")
    assert values["postgresql"]["postgresqlScheme"] == scheme


def test_helm_values_run_this_image_with_k8s_run_launcher_and_no_secret() -> None:
    values = _load(HELM_VALUES)
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert deployment["name"] == pyproject["tool"]["dagster"]["code_location_name"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", pyproject["tool"]["dagster"]["module_name"]]
    assert deployment["port"] == 4000
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert deployment["envSecrets"] == [{"name": "anubis-app"}]
    # PostgreSQL from a secret: no password in the values, and the chart does not invent one
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    assert "postgresqlPassword" not in values["postgresql"]
    for item in deployment["env"]:
        assert not SECRET_NAME.search(item["name"]), item["name"]
    dagster_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("dagster=="))
    version = dagster_pin.split("==")[1]
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert f"--version {version}" in HELM_VALUES.read_text(encoding="utf-8")
    assert f"--version {version}" in readme


def test_helm_template_renders_the_instance() -> None:
    """With `helm` installed and the chart unpacked (ANUBIS_DAGSTER_CHART=path/to/dagster), the
    real chart renders these values into the instance the daemon will run."""
    helm = shutil.which("helm")
    chart = os.environ.get("ANUBIS_DAGSTER_CHART")
    if not helm or not chart:
        pytest.skip("helm or ANUBIS_DAGSTER_CHART (the dagster chart, unpacked) not available")
    result = subprocess.run(
        [helm, "template", "anubis", chart, "-f", str(HELM_VALUES)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    (instance_map,) = [
        d for d in documents if d["kind"] == "ConfigMap" and "dagster.yaml" in d.get("data", {})
    ]
    instance = yaml.safe_load(instance_map["data"]["dagster.yaml"])
    assert instance["run_launcher"]["class"] == "K8sRunLauncher"
    assert instance["run_monitoring"]["enabled"] is True
    assert (
        instance["run_coordinator"]["config"]["tag_concurrency_limits"]
        == _load(INSTANCE)["run_coordinator"]["config"]["tag_concurrency_limits"]
    )
    assert instance["run_storage"]["config"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
