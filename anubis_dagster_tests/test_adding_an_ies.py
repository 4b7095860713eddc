"""Adding an IES is one package plus one block in `integrations.yaml`: nothing in the
production package changes, the registry discovers the adapter, its resources and its
partitions (issue 11's "Done when").

The test-only third IES (`anubis_dagster_tests/third_ies/`) is added to the versioned
integrations file as one appended block; the definitions built from that file must carry it
everywhere a built-in partner appears, and no production module may name it. Its environment
variables are its package's (issue 24): composed into the settings, validated, checked for
typos and read by the generic resource code, with nothing overridden.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import dagster as dg
import pytest
import yaml

import anubis_dagster
import anubis_dagster_tests.third_ies.adapter as tiny_adapter
from anubis_dagster.config.integrations import DEFAULT_FILE, FILE_ENV, load_integrations
from anubis_dagster.definitions import build_definitions
from anubis_dagster.health.assets import health_key, job_name
from anubis_dagster.integrations.base import adapter_class
from anubis_dagster.settings import (
    EnvironmentSettings,
    Settings,
    SettingsError,
    environments,
    get_settings,
    register_environment,
    setting,
    shipped_environments,
    unknown_variables,
)
from anubis_dagster_tests.test_third_adapter import TINY_ENTRY

PRODUCTION_PACKAGE = Path(anubis_dagster.__file__).parent


def _with_one_more_block(tmp_path: Path) -> Path:
    """The versioned integrations file, unchanged, plus the third IES's entry at the end."""
    versioned = DEFAULT_FILE.read_text()
    block = yaml.safe_dump([TINY_ENTRY], sort_keys=False, allow_unicode=True)
    path = tmp_path / "integrations.yaml"
    path.write_text(versioned.rstrip("\n") + "\n" + _indent(block, "  "))
    return path


def _indent(text: str, prefix: str) -> str:
    return "".join(prefix + line if line.strip() else line for line in text.splitlines(True))


def test_the_registry_discovers_a_new_ies_from_its_package_and_one_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _with_one_more_block(tmp_path)
    monkeypatch.setenv(FILE_ENV, str(path))
    monkeypatch.setenv("TINY_IES_URL", "http://127.0.0.1:9")
    added = path.read_text().removeprefix(DEFAULT_FILE.read_text().rstrip("\n") + "\n")
    assert yaml.safe_load(added) == [TINY_ENTRY]  # the one change: one block, appended

    config = load_integrations()
    builtin = [i.key for i in load_integrations(DEFAULT_FILE).integrations]
    assert [i.key for i in config.integrations] == [*builtin, "tiny"]
    assert adapter_class("tiny_ies") is tiny_adapter.TinyAdapter

    defs = build_definitions(config)
    deliver = defs.resolve_job_def("deliver_job").partitions_def
    check = defs.resolve_job_def("check_job").partitions_def
    assert deliver is not None and check is not None
    assert "tiny" in deliver.get_partition_keys()
    assert "tiny" not in check.get_partition_keys()  # no status endpoint, no check partition
    # its resource, built by the generic code from the adapter's `apis` and its settings
    resources = defs.resources or {}
    with dg.build_resources({"tiny_api": resources["tiny_api"]}) as built:
        assert isinstance(built.tiny_api, tiny_adapter.TinyApiResource)
        assert built.tiny_api.base_url == "http://127.0.0.1:9"
        assert built.tiny_api.rate_limit == "1000/1"  # its model's default
    for key in adapter_class("kroton").resource_keys | adapter_class("estacio").resource_keys:
        assert key in resources
    # its health asset and job, like the built-in partners'
    graph = defs.resolve_asset_graph()
    assert health_key("tiny") in graph.get_all_asset_keys()
    assert defs.resolve_job_def(job_name("tiny")) is not None


def test_no_production_module_names_the_test_only_ies() -> None:
    """Everything about the third IES lives in its package: the production code finds it only
    through the registry (the integration `type` in the file)."""
    names = ("tiny", "third_ies", "TinyAdapter")
    mentions = [
        f"{source.relative_to(PRODUCTION_PACKAGE)}: {name}"
        for source in PRODUCTION_PACKAGE.rglob("*")
        if source.is_file() and source.suffix in {".py", ".yaml", ".toml", ".sql"}
        for name in names
        if name.lower() in source.read_text(encoding="utf-8").lower()
    ]
    assert mentions == []


def test_a_new_ies_owns_its_environment_variables_without_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The test IES declares its variables in its package (`TinyEnvironment`) and overrides
    nothing of the generic code: they are validated with the core's, reported when mistyped,
    shown by the doctor, and read by `PartnerApiResource.from_settings` itself."""
    resource = tiny_adapter.TinyApiResource
    overridden = {"from_settings", "env", "missing_settings"} & set(vars(resource))
    assert overridden == set()  # the generic code, as for Kroton and Estácio
    assert "TINY_IES_URL" in Settings.variables()

    monkeypatch.setenv("TINY_IES_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("TINY_IES_RATE_LIMIT", "5/60")
    monkeypatch.setenv("TINY_IES_TIMEOUT_SECONDS", "3")
    api = resource.from_settings()
    assert (api.base_url, api.rate_limit, api.timeout_seconds) == ("http://127.0.0.1:9", "5/60", 3)
    shown = {variable: value for variable, value, _ in get_settings().effective()}
    assert shown["TINY_IES_RATE_LIMIT"] == "5/60"

    monkeypatch.setenv("TINY_IES_RATE_LIMIT", "lots")
    monkeypatch.setenv("TINY_IES_URL", "127.0.0.1:9")
    with pytest.raises(SettingsError) as raised:
        get_settings()
    assert "TINY_IES_RATE_LIMIT: must look like REQUESTS/SECONDS" in str(raised.value)
    assert "TINY_IES_URL: must be an http(s):// URL with a host" in str(raised.value)

    monkeypatch.setenv("TINY_IES_TIMEOUT_SECOND", "3")  # a typo of one of its variables
    assert any(
        line.startswith(
            "TINY_IES_TIMEOUT_SECOND: no such setting (did you mean TINY_IES_TIMEOUT_SECONDS?)"
        )
        for line in unknown_variables()
    )


def test_the_core_settings_module_names_no_integrations_variable() -> None:
    """Kroton's and Estácio's variables are declared in their packages, not the core's."""
    modules = sorted((PRODUCTION_PACKAGE / "settings").glob("*.py"))
    assert modules, "the core's settings package"
    core = "\n".join(p.read_text(encoding="utf-8") for p in modules).lower()
    shipped = {model.__module__: model.own_variables() for model in shipped_environments()}
    assert set(shipped) >= {
        "anubis_dagster.integrations.kroton.environment",
        "anubis_dagster.integrations.estacio.environment",
    }
    named = [v for variables in shipped.values() for v in variables if v.lower() in core]
    assert named == []


def test_an_environment_model_cannot_take_another_models_variable_or_prefix() -> None:
    """Registering refuses what would make a variable ambiguous or escape the typo check."""

    class Stray(EnvironmentSettings):
        prefixes: ClassVar[tuple[str, ...]] = ("API_ACME_",)
        api_other_url: str | None = setting(None, "outside its prefixes", group="acme")

    class Thief(EnvironmentSettings):
        prefixes: ClassVar[tuple[str, ...]] = ("API_KROTON_",)
        api_kroton_base_url: str | None = setting(None, "Kroton's already", group="acme")

    class Core(EnvironmentSettings):
        prefixes: ClassVar[tuple[str, ...]] = ("ANUBIS_ACME_",)

    for model, reason in (
        (Stray, "does not start with"),
        (Thief, "already read"),
        (Core, "prefixes"),
    ):
        with pytest.raises(TypeError, match=reason):
            register_environment(model)
    assert not {Stray, Thief, Core} & set(environments())
