"""Bad or missing settings fail early with a message naming the variable."""

from __future__ import annotations

import dagster as dg
import pytest

from anubis_dagster.config.integrations import ConfigError, load_integrations
from anubis_dagster.definitions import build_definitions
from anubis_dagster.settings import SettingsError
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
            run_config=QUIET,
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
