"""The deployment files: Dockerfile, docker-compose, the Helm values. No Docker daemon or cluster
is needed: the files are checked for structure, for secrets, and against each other (the Helm
values must say what deploy/postgres/dagster.yaml says), and `docker compose config` and the
real chart's rendering run when the tools (and, for the chart, ANUBIS_DAGSTER_CHART) are there
(skipped otherwise, on CI too: a missing tool is not a failure, a failing check is)."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from anubis_dagster_tests.helm_instance import render_instance, validate_with_dagster

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
#: services of an opt-in profile (`docker compose --profile auth up`)
PROFILED = {"oauth2-proxy": "auth"}
COMPUTE_LOGS_DIR = "/opt/dagster/compute_logs"


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
    assert set(services) == LONG_RUNNING | {"setup"} | set(PROFILED)
    for name, profile in PROFILED.items():
        assert services[name]["profiles"] == [profile], name
    assert not [n for n in LONG_RUNNING | {"setup"} if services[n].get("profiles")]
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
    # the UI has no login of its own: loopback only unless told otherwise
    assert services["webserver"]["ports"] == ["${UI_BIND:-127.0.0.1}:${UI_PORT:-3000}:3000"]
    published = {n for n, service in services.items() if service.get("ports")}
    assert published == {"webserver", "oauth2-proxy"}, "only the UI (and its proxy) published"
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
    # the file is Compose Specification (top-level `name`): docker-compose 1.x predates it
    legacy = shutil.which("docker-compose")
    if legacy:
        probe = subprocess.run(
            [legacy, "version", "--short"], capture_output=True, text=True, timeout=60
        )
        if probe.returncode == 0 and not probe.stdout.strip().startswith("1."):
            return [legacy]
    return None


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
    # issue 26 / 22: read from the chart's templates (deployment-webserver, ingress.yaml at
    # c82c7c75, helpers/instance/_compute-log-manager.tpl at 84842bc4, configmap-instance.yaml)
    "dagsterWebserver.enableReadOnly", "dagsterWebserver.envSecrets",
    "ingress", "ingress.enabled", "ingress.ingressClassName", "ingress.annotations",
    "ingress.dagsterWebserver", "ingress.dagsterWebserver.host", "ingress.dagsterWebserver.path",
    "ingress.dagsterWebserver.pathType", "ingress.dagsterWebserver.tls",
    "ingress.dagsterWebserver.tls.enabled", "ingress.dagsterWebserver.tls.secretName",
    "ingress.readOnlyDagsterWebserver", "ingress.readOnlyDagsterWebserver.host",
    "ingress.readOnlyDagsterWebserver.path", "ingress.readOnlyDagsterWebserver.pathType",
    "ingress.readOnlyDagsterWebserver.tls", "ingress.readOnlyDagsterWebserver.tls.enabled",
    "ingress.readOnlyDagsterWebserver.tls.secretName",
    "computeLogManager", "computeLogManager.type", "computeLogManager.config",
    "computeLogManager.config.s3ComputeLogManager",
    "computeLogManager.config.s3ComputeLogManager.bucket",
    "computeLogManager.config.s3ComputeLogManager.prefix",
    "computeLogManager.config.s3ComputeLogManager.region",
    "computeLogManager.config.s3ComputeLogManager.uploadInterval",
    "computeLogManager.config.s3ComputeLogManager.skipEmptyFiles",
    "computeLogManager.config.s3ComputeLogManager.showUrlOnly",
    "dagsterDaemon.runMonitoring.maxRuntimeSeconds",
    "extraManifests",
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
    "dagsterWebserver.envSecrets",
    "ingress.annotations",
    "extraManifests",
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
    assert deployment["envSecrets"] == [{"name": "anubis-app"}, {"name": "anubis-compute-logs"}]
    # PostgreSQL from a secret: no password in the values, and the chart does not invent one
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    assert "postgresqlPassword" not in values["postgresql"]
    for item in deployment["env"]:
        if SECRET_NAME.search(item["name"]):  # only from a Secret, never a value here
            assert "value" not in item and item["valueFrom"]["secretKeyRef"], item["name"]
    dagster_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("dagster=="))
    version = dagster_pin.split("==")[1]
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert f"--version {version}" in HELM_VALUES.read_text(encoding="utf-8")
    assert f"--version {version}" in readme


def _render_chart(chart: str) -> list[dict[str, Any]]:
    """The chart's manifests for our values, release `anubis` in namespace `anubis`, rendered by
    Helm itself: the `helm` binary when installed, else Helm's Go SDK through the PyPI package
    helm-python-sdk (`pip install helm-python-sdk`, no binary needed)."""
    helm = shutil.which("helm")
    if helm:
        result = subprocess.run(
            [helm, "template", "anubis", chart, "-n", "anubis", "-f", str(HELM_VALUES)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return [d for d in yaml.safe_load_all(result.stdout) if d]
    try:
        helm_python: Any = importlib.import_module("helm_python")
    except ImportError:
        pytest.skip("neither helm nor helm-python-sdk is installed")
    manifests = helm_python.Chart.load(chart).render(
        _load(HELM_VALUES), name="anubis", namespace="anubis", is_install=True
    )
    return [d for text in manifests.values() for d in yaml.safe_load_all(text) if d]


def test_helm_template_renders_the_instance() -> None:
    """With the chart unpacked (ANUBIS_DAGSTER_CHART=path/to/dagster, from `helm pull
    dagster/dagster --version <pin> --untar`) and helm or helm-python-sdk installed, the real
    chart renders these values into the instance the daemon will run, and that instance is the
    one the emulation (helm_instance.py) builds, block for block."""
    chart = os.environ.get("ANUBIS_DAGSTER_CHART")
    if not chart:
        pytest.skip("ANUBIS_DAGSTER_CHART (the dagster chart, unpacked) not set")
    documents = _render_chart(chart)
    (instance_map,) = [
        d for d in documents if d["kind"] == "ConfigMap" and "dagster.yaml" in d.get("data", {})
    ]
    instance = yaml.safe_load(instance_map["data"]["dagster.yaml"])
    assert instance["run_launcher"]["class"] == "K8sRunLauncher"
    assert instance["run_monitoring"]["enabled"] is True
    # what the emulation assumes of the templates, checked on the real chart
    assert instance["run_monitoring"]["max_runtime_seconds"] == 900
    assert instance["run_retries"]["retry_on_asset_or_op_failure"] is False
    assert instance["compute_logs"]["class"] == "S3ComputeLogManager"
    emulated = render_instance(_load(HELM_VALUES))
    for key in (
        "run_launcher",
        "run_storage",
        "run_coordinator",
        "compute_logs",
        "run_monitoring",
        "run_retries",
    ):
        assert instance[key] == emulated[key], (key, instance[key], emulated[key])
    # the chart's defaults may add an auto_materialize retention: ours are sensor and schedule
    for key in ("sensor", "schedule"):
        assert instance["retention"][key] == emulated["retention"][key], key
    assert (
        instance["run_coordinator"]["config"]["tag_concurrency_limits"]
        == _load(INSTANCE)["run_coordinator"]["config"]["tag_concurrency_limits"]
    )
    assert instance["run_storage"]["config"]["postgres_db"]["scheme"] == "postgresql+psycopg2"


def test_compose_run_output_is_shared_by_the_code_server_and_the_webserver() -> None:
    """Compute logs: the run workers (processes of the code server) write them, the webserver
    reads them: one named volume at DAGSTER_COMPUTE_LOGS_DIR in both, which the instance file's
    LocalComputeLogManager reads, and the image sets (and creates, owned by its user)."""
    compose = _load(COMPOSE)
    instance = _load(INSTANCE)
    assert instance["compute_logs"]["class"] == "LocalComputeLogManager"
    assert instance["compute_logs"]["config"]["base_dir"] == {"env": "DAGSTER_COMPUTE_LOGS_DIR"}
    assert "compute-logs" in compose["volumes"]
    for name in ("code-server", "webserver"):
        service = compose["services"][name]
        assert service["environment"]["DAGSTER_COMPUTE_LOGS_DIR"] == COMPUTE_LOGS_DIR, name
        assert f"compute-logs:{COMPUTE_LOGS_DIR}" in service["volumes"], name
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert f"DAGSTER_COMPUTE_LOGS_DIR={COMPUTE_LOGS_DIR}" in dockerfile
    assert 'mkdir -p "${ANUBIS_HOME}" "${DAGSTER_COMPUTE_LOGS_DIR}"' in dockerfile


def test_compose_processes_use_least_privilege_database_roles() -> None:
    """Nothing but the postgres container uses the superuser; the long-running processes use
    the app role (rows only), Dagster's own role and the SELECT-only orders reader; the owner
    (DDL) and the marketplace (writes orders) only where they are needed."""
    compose = _load(COMPOSE)
    services = compose["services"]
    roles = re.compile(r"postgresql://(\w+):")

    def role(name: str, variable: str) -> str:
        match = roles.match(services[name]["environment"][variable])
        assert match, (name, variable)
        return match.group(1)

    for name in ("code-server", "daemon", "webserver"):
        assert role(name, "ANUBIS_DATABASE_URL") == "anubis_app", name
        assert role(name, "ANUBIS_ORDERS_DATABASE_URL") == "orders_reader", name
        assert services[name]["environment"]["DAGSTER_PG_USER"] == "dagster", name
        assert "DAGSTER_DB_PASSWORD" in services[name]["environment"]["PGPASSWORD"], name
    assert role("setup", "ANUBIS_DATABASE_URL") == "anubis_owner"
    assert role("setup", "ANUBIS_ORDERS_DATABASE_URL") == "marketplace"
    assert role("order-feed", "ANUBIS_ORDERS_DATABASE_URL") == "marketplace"
    text = COMPOSE.read_text(encoding="utf-8")
    assert text.count("POSTGRES_USER") == text.count("POSTGRES_USER", text.index("  postgres:"))
    assert "POSTGRES_PASSWORD" not in str(
        {n: s.get("environment") for n, s in services.items() if n != "postgres"}
    )
    init = (DEPLOY / "compose" / "initdb.sql").read_text(encoding="utf-8")
    for name in ("anubis_owner", "anubis_app", "dagster", "orders_reader", "marketplace"):
        assert f"CREATE ROLE {name} LOGIN PASSWORD" in init, name
        assert re.search(r"^\\getenv \w+ \w+_DB_PASSWORD$", init, re.MULTILINE)
    assert "GRANT SELECT ON TABLES TO orders_reader" in init
    assert "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO anubis_app" in init
    postgres_env = services["postgres"]["environment"]
    for variable in re.findall(r"^\\getenv \w+ (\w+)$", init, re.MULTILINE):
        assert variable in postgres_env, f"initdb.sql reads {variable}, not set on postgres"


def test_compose_auth_profile_puts_oauth2_proxy_in_front_of_the_ui() -> None:
    service = _load(COMPOSE)["services"]["oauth2-proxy"]
    image, _, tag = service["image"].rpartition(":")
    assert image == "quay.io/oauth2-proxy/oauth2-proxy" and re.fullmatch(r"v\d+\.\d+\.\d+", tag)
    env = service["environment"]
    assert env["OAUTH2_PROXY_UPSTREAMS"] == "http://webserver:3000/"
    for variable in ("CLIENT_ID", "CLIENT_SECRET", "COOKIE_SECRET", "EMAIL_DOMAINS"):
        assert env[f"OAUTH2_PROXY_{variable}"].startswith("${"), variable  # from deploy/.env
    assert service["depends_on"] == {"webserver": {"condition": "service_healthy"}}


# --------------------------------------------------------------------------------------------
# Helm: the instance the chart would render (emulated: helm_instance.py), the user-code pod's
# instance, who reaches the UI and the code server
# --------------------------------------------------------------------------------------------
def test_helm_instance_has_run_limits_retries_queue_and_compute_logs(tmp_path: Path) -> None:
    """The chart's instance ConfigMap as its templates build it from our values (an emulation,
    see helm_instance.py), checked for what matters and loaded by Dagster's own schemas."""
    instance = render_instance(_load(HELM_VALUES))
    shipped = _load(INSTANCE)
    monitoring = instance["run_monitoring"]
    assert monitoring["enabled"] is True
    # a hung run without its own dagster/max_runtime tag is ended, as on compose
    assert monitoring["max_runtime_seconds"] == shipped["run_monitoring"]["max_runtime_seconds"]
    assert monitoring["max_runtime_seconds"] == 900
    assert (
        monitoring["cancel_timeout_seconds"] == shipped["run_monitoring"]["cancel_timeout_seconds"]
    )
    assert monitoring["start_timeout_seconds"] == 300  # a pod to schedule and an image to pull
    # crashed workers only: a run failed by an op is not re-run
    assert instance["run_retries"] == shipped["run_retries"]
    assert instance["run_retries"]["retry_on_asset_or_op_failure"] is False
    # the queue: one intake run, one deliver and one check run per integration
    queue = instance["run_coordinator"]
    assert queue["class"] == "QueuedRunCoordinator"
    assert (
        queue["config"]["tag_concurrency_limits"]
        == shipped["run_coordinator"]["config"]["tag_concurrency_limits"]
    )
    assert {"key": "anubis/job", "value": "intake", "limit": 1} in queue["config"][
        "tag_concurrency_limits"
    ]
    # run output outlives the run pod, in the bucket the webserver reads
    logs = instance["compute_logs"]
    assert logs["class"] == "S3ComputeLogManager"
    assert logs["config"]["bucket"] and not logs["config"].get("show_url_only")
    assert instance["run_launcher"]["config"]["instance_config_map"] == "anubis-dagster-instance"
    assert instance["run_storage"]["config"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    home = tmp_path / "home"
    home.mkdir()
    assert validate_with_dagster(instance, home) == []


def test_helm_instance_emulation_is_checked_by_dagster(tmp_path: Path) -> None:
    """The validation is real: a wrong key in what the chart renders is refused."""
    instance = render_instance(_load(HELM_VALUES))
    instance["run_monitoring"]["max_runtime_seconds"] = "15 minutes"
    instance["compute_logs"]["config"]["upload_interval"] = "often"
    home = tmp_path / "home"
    home.mkdir()
    errors = validate_with_dagster(instance, home)
    assert errors and "max_runtime_seconds" in errors[0]
    instance = render_instance(_load(HELM_VALUES))
    instance["compute_logs"]["config"]["upload_interval"] = "often"
    errors = validate_with_dagster(instance, home)
    assert errors and errors[0].startswith("compute_logs")


def test_helm_user_code_pod_can_open_the_instance() -> None:
    """The user-code pod runs with the image's dagster.yaml (the chart does not mount its
    instance ConfigMap there): every variable that file reads is set for the pod, pointing at
    the chart's storage, except DAGSTER_COMPUTE_LOGS_DIR, which the image sets."""
    values = _load(HELM_VALUES)
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    env = {item["name"]: item for item in deployment["env"]}
    needed = _env_names(_load(INSTANCE)) - {"DAGSTER_COMPUTE_LOGS_DIR"}
    assert needed <= set(env), sorted(needed - set(env))
    pg = values["postgresql"]
    assert env["DAGSTER_PG_HOST"]["value"] == pg["postgresqlHost"]
    assert env["DAGSTER_PG_PORT"]["value"] == str(pg["service"]["port"])
    assert env["DAGSTER_PG_DB"]["value"] == pg["postgresqlDatabase"]
    assert env["DAGSTER_PG_USER"]["value"] == pg["postgresqlUsername"]
    secret = env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]
    assert secret == {
        "name": values["global"]["postgresqlSecretName"],
        "key": "postgresql-password",
    }
    assert "ENV DAGSTER_PYTHONUNBUFFERED" not in (ROOT / "Dockerfile").read_text()
    # includeConfigInLaunchedRuns passes this env (valueFrom included) to run pods through the
    # chart's container context: dagster-k8s must accept it
    from dagster_k8s.container_context import K8sContainerContext

    context = K8sContainerContext(
        env=deployment["env"], env_secrets=[item["name"] for item in deployment["envSecrets"]]
    )
    env_list = context.run_k8s_config.container_config["env"]
    (password,) = [e for e in env_list if e["name"] == "PGPASSWORD"]
    assert password["value_from"]["secret_key_ref"]["key"] == "postgresql-password"
    # the image the chart runs is the k8s variant, which has dagster-k8s and dagster-aws
    assert deployment["image"]["tag"].endswith("-k8s")
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "FROM production AS k8s" in dockerfile and '"anubis_dagster[k8s]"' in dockerfile
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extra = pyproject["project"]["optional-dependencies"]["k8s"]
    assert {d.split("==")[0] for d in extra} == {"dagster-k8s", "dagster-aws"}
    postgres_pin = next(
        d for d in pyproject["project"]["dependencies"] if d.startswith("dagster-postgres==")
    )
    assert {d.split("==")[1] for d in extra} == {postgres_pin.split("==")[1]}


def test_helm_ui_only_behind_an_authenticating_ingress_with_a_read_only_webserver() -> None:
    values = _load(HELM_VALUES)
    assert values["dagsterWebserver"]["enableReadOnly"] is True
    ingress = values["ingress"]
    assert ingress["enabled"] is True
    annotations = ingress["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/auth-url"].endswith("/oauth2/auth")
    assert "/oauth2/start" in annotations["nginx.ingress.kubernetes.io/auth-signin"]
    for host in ("dagsterWebserver", "readOnlyDagsterWebserver"):
        assert ingress[host]["host"] and ingress[host]["tls"]["enabled"] is True, host


def test_helm_network_policy_lets_only_dagster_reach_the_code_server() -> None:
    values = _load(HELM_VALUES)
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    (policy,) = [m for m in values["extraManifests"] if m["kind"] == "NetworkPolicy"]
    spec = policy["spec"]
    # the code server's pods, by the labels the subchart's deployment-user.yaml gives them
    assert spec["podSelector"]["matchLabels"] == {
        "component": "user-deployments",
        "deployment": deployment["name"],
    }
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": deployment["port"]}]
    allowed: set[str] = set()
    for source in rule["from"]:
        assert set(source) == {"podSelector"}, "no namespace- or IP-wide source"
        selector = source["podSelector"]
        for expression in selector.get("matchExpressions", []):
            assert expression["key"] == "component" and expression["operator"] == "In"
            allowed |= set(expression["values"])
        allowed |= {f"{k}={v}" for k, v in selector.get("matchLabels", {}).items()}
    assert allowed == {
        "dagster-webserver",
        "dagster-webserver-read-only",
        "dagster-daemon",
        "app.kubernetes.io/component=run_worker",  # K8sRunLauncher's run pods
    }
