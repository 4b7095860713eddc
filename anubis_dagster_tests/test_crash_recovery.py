"""A deliver run's process is killed (SIGKILL) mid-batch; a new run finishes the work and the
partner holds exactly one registration per student."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anubis_dagster_tests.factories import make_cpf, make_order
from anubis_dagster_tests.harness import Harness
from anubis_sandboxes.kroton import KrotonSandbox

STUDENTS = 16


@pytest.mark.slow
def test_killed_deliver_run_is_finished_by_the_next_one_without_duplicates(
    kroton: KrotonSandbox, anubis_env: str, tmp_path: Path
) -> None:
    kroton.configure(latency_ms=150)  # slow partner: the kill lands mid-batch
    harness = Harness(anubis_env)
    harness.ingest([make_order(i) for i in range(1, STUDENTS + 1)])

    env = {**os.environ, "ANUBIS_LEASE_SECONDS": "2", "DAGSTER_HOME": str(tmp_path / "dh")}
    (tmp_path / "dh").mkdir()
    worker = subprocess.Popen(
        [sys.executable, "-m", "anubis_dagster.cli", "run", "--settle-seconds", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        registered = sum(kroton.stats()["registrations_per_cpf"].values())
        if registered >= 4 or worker.poll() is not None:
            break
        time.sleep(0.02)
    assert worker.poll() is None, "the worker finished before it could be killed"
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed_at = sum(kroton.stats()["registrations_per_cpf"].values())
    assert 0 < killed_at < STUDENTS

    time.sleep(2.5)  # the killed run's leases expire
    kroton.configure(latency_ms=0)
    harness.deliver_until_settled()

    assert set(harness.statuses().values()) <= {"awaiting_register", "registered"}
    per_cpf = kroton.stats()["registrations_per_cpf"]
    assert per_cpf == {make_cpf(i): 1 for i in range(1, STUDENTS + 1)}
    # the request in flight at the kill has its row, left `in_flight` (rows are written before
    # the request leaves, so a row can exist for a request the kill stopped before sending)
    assert harness.attempt_rows() >= sum(
        1 for r in kroton.requests_log() if r["endpoint"] != "token"
    )
    assert (
        harness.attempt_rows() - sum(1 for r in kroton.requests_log() if r["endpoint"] != "token")
        <= 1
    )
