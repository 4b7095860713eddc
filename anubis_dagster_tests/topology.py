"""The production topology as separate processes, for the `topology` test and its benchmark.

`dagster api grpc` (the code server), `dagster-daemon run` and `dagster-webserver` on a fresh
PostgreSQL database used as the Dagster instance (deploy/postgres/dagster.yaml in a temporary
DAGSTER_HOME, with shorter monitoring polls), a fresh PostgreSQL app DB and orders DB, the
Kroton and Estácio sandboxes as their own processes, and a webhook sink. Every process is
started in its own session and killed, with its group, when the topology stops, also when the
test fails.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from anubis_dagster.intake.orders_source import OrdersSource
from anubis_sandboxes.webhook_sink import WebhookSink

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
INSTANCE_FILE = ROOT / "deploy" / "postgres" / "dagster.yaml"
WORKSPACE_FILE = ROOT / "deploy" / "postgres" / "workspace.yaml"
SANDBOX_ENV = ROOT / "scripts" / "sandbox.env"
#: what the test's instance file changes from the shipped one: faster monitoring polls and a
#: start timeout the "fails to launch" case can wait for (the shipped values are for production)
TEST_MONITORING = {"poll_interval_seconds": 5, "start_timeout_seconds": 90}
REGISTER_ENDPOINTS = {"register", "register_v5"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # not up yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} ({last_error})")


def _healthy(url: str) -> bool:
    return httpx.get(url, timeout=5).is_success


def _healthy(url: str) -> bool:
    return httpx.get(url, timeout=5).is_success


def sandbox_env(kroton_url: str, estacio_url: str, sink_url: str) -> dict[str, str]:
    """scripts/sandbox.env's partner settings (credentials, quotas), pointed at these ports.
    The demo's check pacing is left out: the topology runs with default settings."""
    env: dict[str, str] = {}
    for line in SANDBOX_ENV.read_text().splitlines():
        line = line.strip()
        if not line.startswith("export ") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        if name.startswith(("API_", "CATALOG_")):
            env[name] = value.replace("http://127.0.0.1:8701", kroton_url).replace(
                "http://127.0.0.1:8702", estacio_url
            )
    env["ANUBIS_SLACK_WEBHOOK_URL"] = sink_url
    return env


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill_group(self) -> None:
        """SIGKILL this process's own session (it and the run workers it spawned)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


@dataclass
class Topology:
    tmp: Path
    admin_url: str
    names: dict[str, str] = field(default_factory=dict)  # role → database name
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    retired: list[Process] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    sink: WebhookSink | None = None

    # -- databases ----------------------------------------------------------------------------
    def _admin(self, statement: str) -> None:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(statement))
        finally:
            engine.dispose()

    def db_url(self, role: str, driver: str = "psycopg") -> str:
        url = make_url(self.admin_url).set(drivername=f"postgresql+{driver}")
        return url.set(database=self.names[role]).render_as_string(hide_password=False)

    def create_databases(self) -> None:
        suffix = f"{os.getpid()}_{int(time.time())}"
        for role in ("dagster", "app", "orders"):
            self.names[role] = f"anubis_topology_{role}_{suffix}"
            self._admin(f'CREATE DATABASE "{self.names[role]}"')

    def drop_databases(self) -> None:
        for name in self.names.values():
            with contextlib.suppress(Exception):
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- processes ----------------------------------------------------------------------------
    def start_process(self, name: str, argv: list[str]) -> Process:
        log = self.tmp / f"{name}.log"
        handle = log.open("ab")
        popen = subprocess.Popen(
            argv,
            env=self.env,
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: killed with its children at the end
        )
        handle.close()
        process = Process(name, popen, log)
        if name in self.processes:
            self.retired.append(self.processes[name])
        self.processes[name] = process
        return process

    def start(self) -> None:
        admin = make_url(self.admin_url)
        self.create_databases()
        home = self.tmp / "dagster_home"
        home.mkdir()
        instance = yaml.safe_load(INSTANCE_FILE.read_text())
        instance["run_monitoring"].update(TEST_MONITORING)
        (home / "dagster.yaml").write_text(yaml.safe_dump(instance))
        self.sink = WebhookSink(log_path=self.tmp / "alerts.log")
        sink_url = self.sink.start()
        for role in ("kroton", "estacio", "code_server", "webserver"):
            self.ports[role] = free_port()
        kroton_url = f"http://127.0.0.1:{self.ports['kroton']}"
        estacio_url = f"http://127.0.0.1:{self.ports['estacio']}"
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ANUBIS_", "API_", "CATALOG_", "DAGSTER_", "PG"))
        }
        self.env = {
            **inherited,
            **sandbox_env(kroton_url, estacio_url, sink_url),
            "ANUBIS_HOME": str(self.tmp / "anubis_home"),
            "ANUBIS_DATABASE_URL": self.db_url("app"),
            "ANUBIS_ORDERS_DATABASE_URL": self.db_url("orders"),
            "ANUBIS_UI_URL": f"http://127.0.0.1:{self.ports['webserver']}",
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_HOST": admin.host or "127.0.0.1",
            "DAGSTER_PG_PORT": str(admin.port or 5432),
            "DAGSTER_PG_DB": self.names["dagster"],
            "DAGSTER_PG_USER": admin.username or "postgres",
            "DAGSTER_COMPUTE_LOGS_DIR": str(self.tmp / "compute_logs"),
            "ANUBIS_CODE_SERVER_HOST": "127.0.0.1",
            "ANUBIS_CODE_SERVER_PORT": str(self.ports["code_server"]),
            "PYTHONUNBUFFERED": "1",
        }
        if admin.password:
            self.env["PGPASSWORD"] = admin.password
        subprocess.run(
            [str(BIN / "anubis"), "db", "upgrade"],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        OrdersSource(self.env["ANUBIS_ORDERS_DATABASE_URL"], "orders").ensure_table()

        py = str(BIN / "python")
        self.start_process(
            "kroton",
            [
                py,
                "-m",
                "anubis_sandboxes.kroton",
                "--port",
                str(self.ports["kroton"]),
                "--processing-delay",
                "1",
                "--classification-step",
                "3",
                "--rate-limit",
                "600/60",
            ],
        )
        self.start_process(
            "estacio",
            [
                py,
                "-m",
                "anubis_sandboxes.estacio",
                "--port",
                str(self.ports["estacio"]),
                "--rate-limit",
                "600/60",
            ],
        )
        self.start_code_server()
        workspace = str(WORKSPACE_FILE)
        self.start_process("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace])
        self.start_webserver()
        for role in ("kroton", "estacio"):
            wait_for(
                functools.partial(_healthy, self.sandbox_url(role) + "/__sandbox/health"),
                30,
                f"the {role} sandbox",
            )
        wait_for(self.location_loaded, 120, "the webserver with the code location loaded", 1)

    def start_webserver(self) -> Process:
        return self.start_process(
            "webserver",
            [
                str(BIN / "dagster-webserver"),
                "-w",
                str(WORKSPACE_FILE),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.ports["webserver"]),
            ],
        )

    def start_code_server(self) -> Process:
        process = self.start_process(
            "code_server",
            [
                str(BIN / "dagster"),
                "api",
                "grpc",
                "-m",
                "anubis_dagster.definitions",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports["code_server"]),
                "--location-name",
                "anubis",
            ],
        )
        wait_for(lambda: self._port_open(self.ports["code_server"]), 90, "the code server")
        return process

    @staticmethod
    def _port_open(port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    def stop(self) -> None:
        for process in [*self.processes.values(), *self.retired]:
            process.kill_group()
        if self.sink is not None:
            self.sink.shutdown()
            self.sink.server_close()
        self.drop_databases()

    # -- talking to the parts -----------------------------------------------------------------
    def sandbox_url(self, role: str) -> str:
        return f"http://127.0.0.1:{self.ports[role]}"

    def sandbox_log(self, role: str) -> list[dict[str, Any]]:
        return list(httpx.get(self.sandbox_url(role) + "/__sandbox/requests", timeout=10).json())

    def sandbox_stats(self, role: str) -> dict[str, Any]:
        return dict(httpx.get(self.sandbox_url(role) + "/__sandbox/stats", timeout=10).json())

    def configure_sandbox(self, role: str, **settings: Any) -> None:
        reply = httpx.post(self.sandbox_url(role) + "/__sandbox/config", json=settings, timeout=10)
        reply.raise_for_status()

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = httpx.post(
            f"http://127.0.0.1:{self.ports['webserver']}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=60,
        )
        reply.raise_for_status()
        body = reply.json()
        assert "errors" not in body, body
        return dict(body["data"])

    def location_loaded(self) -> bool:
        data = self.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name "
            "locationOrLoadError { __typename } } } } }"
        )
        entries = data["workspaceOrError"]["locationEntries"]
        return any(
            e["name"] == "anubis" and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
            for e in entries
        )

    def load_orders(self, orders: list[dict[str, Any]]) -> None:
        OrdersSource(self.env["ANUBIS_ORDERS_DATABASE_URL"], "orders").load(orders)

    def alerts(self) -> list[str]:
        return list(self.sink.received) if self.sink else []

    def run_workers(self) -> list[tuple[int, float]]:
        """(pid, start time) of the code server's live child processes (its run workers)."""
        parent = self.processes["code_server"].pid
        clock = os.sysconf("SC_CLK_TCK")
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        workers = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) != parent or fields[0] in ("Z", "X"):
                continue
            if "resource_tracker" in cmdline or "spawn_main" not in cmdline:
                continue
            workers.append((int(entry.name), boot + int(fields[19]) / clock))
        return workers

    def dump_logs(self) -> str:
        parts = []
        for process in [*self.retired, *self.processes.values()]:
            with contextlib.suppress(OSError):
                tail = process.log.read_text(errors="replace")[-3000:]
                parts.append(f"--- {process.name} ({process.log}) ---\n{tail}")
        return "\n".join(parts)


@contextlib.contextmanager
def running_topology(tmp: Path, admin_url: str) -> Iterator[Topology]:
    topology = Topology(tmp=tmp, admin_url=admin_url)
    try:
        topology.start()
        yield topology
    except BaseException:
        print(topology.dump_logs(), file=sys.stderr)
        raise
    finally:
        topology.stop()


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p95 of 45 values is the 43rd smallest)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def write_report(path: str | None, report: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(report, indent=2, sort_keys=True))
