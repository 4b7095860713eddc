"""A throwaway demo instance for the browser: what `make demo` + `make ui` give a person, on free
ports and temporary homes, so a headless browser can use the Dagster UI on real data.

The IES sandboxes and the webhook sink (`anubis-sandbox`), the demo's 60 generated orders, one
`anubis run` pass (intake, course sync or consent, registration, checks), then the code server,
`dagster-daemon` (it dequeues the runs the Launchpad submits) and `dagster-webserver` as separate
processes on the embedded SQLite instance. The app DB is SQLite too, or the PostgreSQL database
given as `ANUBIS_DATABASE_URL` in `extra_env`. Each process gets its own session and is killed with
its group when the instance stops, also when the caller fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SANDBOX_ENV = ROOT / "scripts" / "sandbox.env"
SINK_DEFAULT_PORT = 8790
LOCATION = "anubis"
#: the demo's orders: the same seed as `make demo`, so the pictures show the same students
DEMO_ORDERS = 60
DEMO_SEED = 42


class ProcessExited(RuntimeError):
    """A process of the instance ended while it was being waited for."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except ProcessExited:
            raise  # a process it waits for is gone: waiting longer would not help
        except Exception as exc:  # not up yet
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} ({last_error})")


def sandbox_env(port_map: dict[int, int]) -> dict[str, str]:
    """scripts/sandbox.env (partner credentials, quotas, the demo's check pace), each default
    sandbox port replaced by the port this instance gave that sandbox."""
    env: dict[str, str] = {}
    for line in SANDBOX_ENV.read_text().splitlines():
        line = line.strip()
        if not line.startswith("export ") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        for default, port in port_map.items():
            value = value.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")
        env[name] = value
    return env


@dataclass
class DemoInstance:
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    #: settings on top of scripts/sandbox.env (e.g. a shorter retry schedule for the pictures)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The Dagster UI."""
        return f"http://127.0.0.1:{self.ports['webserver']}"

    @property
    def app_db_url(self) -> str:
        """`ANUBIS_DATABASE_URL` when given (PostgreSQL), else the embedded SQLite file."""
        default = f"sqlite:///{self.tmp / 'anubis_home' / 'anubis.db'}"
        return self.extra_env.get("ANUBIS_DATABASE_URL") or default

    # -- processes ----------------------------------------------------------------------------
    def _cli(self, *argv: str, timeout: float = 300) -> str:
        done = subprocess.run(
            argv, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def anubis(self, *argv: str, timeout: float = 300) -> str:
        """Run the `anubis` command on this instance's data; its output."""
        return self._cli(str(BIN / "anubis"), *argv, timeout=timeout)

    def _start(self, name: str, argv: list[str]) -> None:
        with (self.tmp / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                argv,
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: killed with its children at the end
            )

    def alive(self, name: str) -> bool:
        """True while process `name` runs; its log tail as the error once it has exited."""
        process = self.processes[name]
        if process.poll() is not None:
            tail = (self.tmp / f"{name}.log").read_text(errors="replace")[-2000:]
            raise ProcessExited(f"{name} exited with {process.returncode}:\n{tail}")
        return True

    def stop(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)

    def logs(self) -> str:
        parts = []
        for name in self.processes:
            with contextlib.suppress(OSError):
                tail = (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]
                parts.append(f"--- {name} ---\n{tail}")
        return "\n".join(parts)

    # -- start --------------------------------------------------------------------------------
    def start(
        self, watch_seconds: int = 0, before_pass: Callable[[DemoInstance], None] | None = None
    ) -> None:
        """Sandboxes, demo orders, one pass (`watch_seconds` more of them), then the UI.
        `before_pass` may set the sandboxes up first (faults, so that the pass leaves some
        dead letters to show)."""
        home = self.tmp / "dagster_home"
        home.mkdir(parents=True)
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ANUBIS_", "API_", "CATALOG_", "DAGSTER_"))
        }
        self.env = {**inherited, "PYTHONUNBUFFERED": "1"}
        sandboxes = [
            line.split(maxsplit=2)
            for line in self._cli(str(BIN / "anubis-sandbox"), "list").splitlines()
            if line.strip()
        ]
        port_map = {SINK_DEFAULT_PORT: free_port()}
        for kind, default_port, *_ in sandboxes:
            self.ports[kind] = port_map[int(default_port)] = free_port()
        self.ports["sink"] = port_map[SINK_DEFAULT_PORT]
        self.ports["code_server"] = free_port()
        self.ports["webserver"] = free_port()
        self.env.update(
            {
                **sandbox_env(port_map),
                "ANUBIS_HOME": str(self.tmp / "anubis_home"),
                "DAGSTER_HOME": str(home),
                "ANUBIS_UI_URL": self.url,
                **self.extra_env,
            }
        )
        for kind, _port, *flags in sandboxes:
            argv = [str(BIN / "anubis-sandbox"), "serve", kind, "--port", str(self.ports[kind])]
            self._start(kind, argv + (flags[0].split() if flags else []))
        self._start(
            "sink",
            [str(BIN / "anubis-sandbox"), "webhook-sink", "--port", str(self.ports["sink"])],
        )
        for name, port in self.ports.items():
            if name not in ("code_server", "webserver"):
                wait_for(lambda port=port: port_open(port), 30, f"the {name} sandbox on :{port}")

        orders = self.tmp / "orders.jsonl"
        self._cli(
            str(BIN / "anubis-sandbox"),
            "orders",
            "--count",
            str(DEMO_ORDERS),
            "--seed",
            str(DEMO_SEED),
            "--out",
            str(orders),
        )
        self._cli(str(BIN / "anubis"), "orders", "load", str(orders))
        self._cli(str(BIN / "anubis"), "names", "import")
        if before_pass is not None:
            before_pass(self)
        run = [str(BIN / "anubis"), "run", "--settle-seconds", "0"]
        if watch_seconds:
            run += ["--watch", str(watch_seconds)]
        self._cli(*run, timeout=300 + watch_seconds)

        workspace = self.tmp / "workspace.yaml"
        workspace.write_text(
            yaml.safe_dump(
                {
                    "load_from": [
                        {
                            "grpc_server": {
                                "host": "127.0.0.1",
                                "port": self.ports["code_server"],
                                "location_name": LOCATION,
                            }
                        }
                    ]
                }
            )
        )
        self._start(
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
                LOCATION,
            ],
        )
        wait_for(
            lambda: self.alive("code_server") and port_open(self.ports["code_server"]),
            120,
            "the code server",
        )
        self._start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)])
        self._start(
            "webserver",
            [
                str(BIN / "dagster-webserver"),
                "-w",
                str(workspace),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.ports["webserver"]),
            ],
        )
        wait_for(
            lambda: self.alive("webserver") and self.location_loaded(),
            120,
            "the webserver with the code location loaded",
            1,
        )
        # the "join the community" dialog would cover the first page a browser opens
        self.graphql("mutation { setNuxSeen }")

    # -- talking to it ------------------------------------------------------------------------
    def alerts(self) -> list[str]:
        """The webhook messages the demo's sink received so far (its `alerts.log`)."""
        path = self.tmp / "anubis_home" / "alerts.log"
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=60,
        )
        reply.raise_for_status()
        body = reply.json()
        if "errors" in body:
            raise RuntimeError(str(body["errors"]))
        return dict(body["data"])

    def configure_sandbox(self, kind: str, **settings: Any) -> None:
        """Change a sandbox's settings at run time (faults, error rate…)."""
        reply = httpx.post(
            f"http://127.0.0.1:{self.ports[kind]}/__sandbox/config", json=settings, timeout=10
        )
        reply.raise_for_status()

    def launch(self, job: str, tags: dict[str, str] | None = None) -> str:
        """Submit a run of `job` (no config), as the Launchpad would; its id."""
        data = self.graphql(
            """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
                 __typename ... on LaunchRunSuccess { run { runId } }
                 ... on PythonError { message } } }""",
            {
                "params": {
                    "selector": {
                        "repositoryLocationName": LOCATION,
                        "repositoryName": "__repository__",
                        "jobName": job,
                    },
                    "runConfigData": {},
                    "executionMetadata": {
                        "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]
                    },
                }
            },
        )
        result = data["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"could not launch {job}: {result}")
        return str(result["run"]["runId"])

    def run(self, run_id: str) -> dict[str, Any]:
        """Status, job and tags of a run."""
        data = self.graphql(
            """query($id: ID!) { runOrError(runId: $id) { ... on Run {
                 status jobName tags { key value } } } }""",
            {"id": run_id},
        )
        return dict(data["runOrError"])

    def wait_run(self, run_id: str, timeout: float = 120) -> str:
        """Wait until the run ends; its final status (SUCCESS, FAILURE, CANCELED)."""
        ended = ("SUCCESS", "FAILURE", "CANCELED")
        return str(
            wait_for(
                lambda: (s := self.run(run_id).get("status")) in ended and s,
                timeout,
                f"run {run_id} to end",
                1,
            )
        )

    def runs_tagged(self, key: str, value: str) -> list[dict[str, Any]]:
        """Job name, status and tags of every run tagged `key=value`."""
        data = self.graphql(
            """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) {
                 ... on Runs { results { runId jobName status } } } }""",
            {"tags": [{"key": key, "value": value}]},
        )
        return list(data["runsOrError"]["results"])

    def runs_of(self, job: str) -> list[dict[str, Any]]:
        """Id, job name and status of every run of `job`."""
        data = self.graphql(
            """query($job: String!) { runsOrError(filter: {pipelineName: $job}) {
                 ... on Runs { results { runId jobName status } } } }""",
            {"job": job},
        )
        return list(data["runsOrError"]["results"])

    def wait_jobs_ran(self, jobs: set[str], timeout: float = 420) -> None:
        """Wait until each of `jobs` has a run and every run of them ended (e.g. started by
        the daemon's sensors and schedules, with nobody clicking anything)."""
        ended = {"SUCCESS", "FAILURE", "CANCELED"}

        def done() -> bool:
            self.alive("daemon")
            runs = {job: self.runs_of(job) for job in jobs}
            return all(runs.values()) and all(
                r["status"] in ended for found in runs.values() for r in found
            )

        wait_for(done, timeout, f"runs of {sorted(jobs)} to end", 2)

    def location_loaded(self) -> bool:
        data = self.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name "
            "locationOrLoadError { __typename } } } } }"
        )
        return any(
            e["name"] == LOCATION and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
            for e in data["workspaceOrError"]["locationEntries"]
        )


@contextlib.contextmanager
def running_demo(
    tmp: Path | None = None,
    watch_seconds: int = 0,
    extra_env: dict[str, str] | None = None,
    before_pass: Callable[[DemoInstance], None] | None = None,
) -> Iterator[DemoInstance]:
    """A started demo instance; everything it started is stopped on the way out."""
    with contextlib.ExitStack() as stack:
        if tmp is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="anubis-ui-")))
        instance = DemoInstance(tmp=tmp, extra_env=dict(extra_env or {}))
        try:
            instance.start(watch_seconds=watch_seconds, before_pass=before_pass)
            yield instance
        except BaseException:
            print(instance.logs(), file=sys.stderr)
            raise
        finally:
            instance.stop()
