"""Settings are read when used, never when a module is imported (issue 24, item 3).

A module constant read from the settings at import froze the value of the first import: tests
had to patch module attributes instead of the environment, and `definitions.py` had to check
the settings before its imports. These tests import every production module with an invalid
environment (nothing may fail: nothing reads it), and show values following the environment
without a re-import.
"""

from __future__ import annotations

import os
import subprocess  # nosec B404: runs this interpreter on a fixed script
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import anubis_dagster
from anubis_dagster.cli.runner import console_loggers
from anubis_dagster.db.models import Subscription
from anubis_dagster.delivery.recorder import next_check_delay
from anubis_dagster.runtime.policies import op_retry_policy

PACKAGE = Path(anubis_dagster.__file__).parent

IMPORT_ALL = """
import importlib, pkgutil, sys
import anubis_dagster
failed = []
for module in pkgutil.walk_packages(anubis_dagster.__path__, "anubis_dagster."):
    if module.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(module.name)
    except Exception as exc:
        failed.append(f"{module.name}: {type(exc).__name__}: {str(exc)[:200]}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_no_module_reads_a_setting_when_imported(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ANUBIS_HOME": str(tmp_path),
        "ANUBIS_LEASE_SECONDS": "0",  # invalid: a module reading the settings would raise
        "ANUBIS_INTAKE_BATCH_SIZE": "none",
    }
    result = subprocess.run(  # nosec B603: this interpreter, a fixed script
        [sys.executable, "-c", IMPORT_ALL],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


def test_values_follow_the_environment_without_a_reimport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    sent = Subscription(sent_at=now - timedelta(hours=1))
    monkeypatch.setenv("ANUBIS_CHECK_MIN_SECONDS", "1800")
    assert next_check_delay(sent, now) == timedelta(seconds=1800)
    monkeypatch.setenv("ANUBIS_CHECK_MIN_SECONDS", "60")
    assert next_check_delay(sent, now) == timedelta(seconds=900)  # a quarter of the age

    monkeypatch.setenv("ANUBIS_OP_RETRY_DELAY_SECONDS", "7")
    assert op_retry_policy().delay == 7
    monkeypatch.setenv("ANUBIS_CONSOLE_LOG_LEVEL", "error")
    assert console_loggers() == {"console": {"config": {"log_level": "ERROR"}}}


def test_definitions_need_no_import_order_workaround() -> None:
    source = (PACKAGE / "definitions.py").read_text(encoding="utf-8")
    assert "noqa: E402" not in source
    assert "@dg.definitions" in source
