"""Bad or missing settings fail early with a message naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from anubis_dagster.config.integrations import ConfigError, load_integrations
from anubis_dagster.definitions import build_definitions
from anubis_dagster.runtime.partitions import partition_run_config
from anubis_dagster.settings import SettingsError, get_settings, reset_settings
from anubis_dagster_tests.harness import QUIET


def test_a_malformed_quota_fails_the_load_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("API_KROTON_RATE_LIMIT", "100 per 5 minutes")
    with pytest.raises(ValueError, match="API_KROTON_RATE_LIMIT: must look like REQUESTS/SECONDS"):
        build_definitions()


def test_a_kroton_run_without_credentials_fails_once_naming_them(
    anubis_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("API_KROTON_BASE_URL", "API_KROTON_SECRET", "CATALOG_KROTON_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    result = (
        build_definitions()
        .resolve_job_def("deliver_job")
        .execute_in_process(
            partition_key="kroton",
            instance=dg.DagsterInstance.ephemeral(),
            run_config={**QUIET, **partition_run_config("delivery_request", "kroton")},
            raise_on_error=False,
        )
    )
    assert not result.success
    message = str(result.failure_data_for_node("fix_data").error.message)  # type: ignore[union-attr]
    assert "Kroton is not configured" in message
    assert "API_KROTON_BASE_URL" in message and "API_KROTON_SECRET" in message


def test_the_integrations_file_is_validated(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "integrations.yaml"
    bad.write_text(
        "version: 1\nintegrations:\n  - key: kroton\n    name: K\n    type: kroton\n"
        "    filters:\n      - filter: {universities: [1]}\n"
    )
    with pytest.raises(ConfigError, match="unknown filter keys: universities"):
        load_integrations(bad)
    monkeypatch.setenv("ANUBIS_INTEGRATIONS_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(SettingsError, match="ANUBIS_INTEGRATIONS_FILE: no such file"):
        load_integrations()


def _env_with(**values: str) -> dict[str, str]:
    return {**os.environ, "ANUBIS_HOME": os.environ.get("ANUBIS_HOME", ".anubis"), **values}


def test_the_code_location_fails_to_load_with_the_message_not_a_stack(tmp_path: Path) -> None:
    """Dagster loads the code location (calls the lazy `defs`, as its loader does): the
    problems come first, and the stack is the frames of the check, not the import chain of
    whichever module read the setting first (none reads one at import)."""
    env = _env_with(ANUBIS_INTAKE_BATCH_SIZE="0", ANUBIS_HOME=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", "from anubis_dagster.definitions import defs; defs()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "ANUBIS_INTAKE_BATCH_SIZE: must be at least 1 (got '0')" in result.stderr
    frames = [line for line in result.stderr.splitlines() if line.strip().startswith("File ")]
    # <string>, Dagster's lazy definitions, definitions.py (defs, build_definitions), settings.py
    assert len(frames) <= 5, result.stderr
    assert "planning.py" not in result.stderr and "alerts.py" not in result.stderr


def test_the_cli_prints_a_bad_setting_and_exits_1_without_a_traceback(tmp_path: Path) -> None:
    env = _env_with(
        API_KROTON_RATE_LIMIT="100 per 5 minutes",
        API_KROTON_SECRET="a-secret-value-123",
        ANUBIS_HOME=str(tmp_path),
    )
    result = subprocess.run(
        [sys.executable, "-m", "anubis_dagster.cli", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("anubis: invalid configuration:")
    assert "API_KROTON_RATE_LIMIT: must look like REQUESTS/SECONDS" in result.stderr
    assert "Traceback" not in result.stderr
    assert "a-secret-value-123" not in result.stderr + result.stdout


def test_secrets_are_registered_for_redaction_and_never_in_repr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from anubis_dagster.core.redaction import redact

    monkeypatch.setenv("API_ONETRUST_TOKEN", "onetrust-token-xyz-789")
    monkeypatch.setenv("ANUBIS_DATABASE_URL", "postgresql://anubis:pg-pass-456@db/anubis")
    reset_settings()
    settings = get_settings()
    assert "onetrust-token-xyz-789" not in repr(settings)
    assert "pg-pass-456" not in repr(settings)
    assert "onetrust-token-xyz-789" not in redact("token onetrust-token-xyz-789 sent")
    assert "pg-pass-456" not in redact("password pg-pass-456 refused")
    shown = dict((name, value) for name, value, _ in settings.effective())
    assert shown["API_ONETRUST_TOKEN"] == "set"
    assert "pg-pass-456" not in shown["ANUBIS_DATABASE_URL"]
    assert "db/anubis" in shown["ANUBIS_DATABASE_URL"]


def test_settings_are_re_read_when_the_environment_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANUBIS_INTAKE_BATCH_SIZE", "7")
    assert get_settings().anubis_intake_batch_size == 7
    assert get_settings() is get_settings()  # cached while nothing changes
    monkeypatch.setenv("ANUBIS_INTAKE_BATCH_SIZE", "8")
    assert get_settings().anubis_intake_batch_size == 8
