"""Every environment variable Anubis reads, in one typed model, validated once at load.

Why one model: a mistyped quota, a negative timeout or a database URL with the wrong scheme
used to pass silently and fail hours later inside a run. `get_settings()` reads the whole
environment into `Settings` and raises `SettingsError` listing every problem, each naming its
variable and what is wrong, before any job, sensor or command starts. The definitions load calls
it, so a bad value stops the code location with that message; the `anubis` CLI prints it and
exits 1; `anubis doctor` prints it with the effective configuration.

Field names are the variables' names in lower case (`ANUBIS_LEASE_SECONDS` →
`anubis_lease_seconds`), so a search for a variable finds its field. An empty variable counts as
unset (shells and Compose files often export empty values). Secret values are `SecretStr`
(never in a `repr`, the doctor prints `set`) and are handed to the redaction registry
(`core.redaction.register_secrets`) whenever they are loaded, so they are redacted by value.

The core's variables are the fields of `Settings`; each integration package owns its own in an
`EnvironmentSettings` model (`integrations/<name>/environment.py`, found by convention, or any
module that applies `@register_environment`, as the test IES does). `Settings` composes them:
`Settings.variables()`, validation, `anubis doctor`, the typo check (`owned_prefixes()`) and the
README table (`markdown_table()`) cover every registered model; an integration reads its values
with `settings.environment(Model)` or, by variable name, `settings.value("API_…")`.

Settings are read when used (`get_settings()` in the function that needs them), never into a
module constant at import.

The model is cached by the values of its variables: tests that `monkeypatch.setenv` get a fresh
model on the next `get_settings()`, and a process whose environment does not change validates
once. `reset_settings()` drops the cache.
"""

from anubis_dagster.settings.checks import (
    DATABASE_SCHEMES,
    check_database_url,
    check_http_url,
    check_quota,
    check_retry_schedule,
    check_window,
    hide_password,
    url_password,
)
from anubis_dagster.settings.composed import (
    CORE_PREFIXES,
    INTEGRATIONS_PACKAGE,
    TEST_ONLY_PREFIXES,
    Settings,
    environments,
    export_dagster_home,
    get_settings,
    markdown_table,
    owned_prefixes,
    register_environment,
    register_environment_secrets,
    reset_settings,
    shipped_environments,
    unknown_variables,
    validate_at_load,
)
from anubis_dagster.settings.model import (
    LOG_LEVELS,
    Environment,
    EnvironmentModel,
    EnvironmentSettings,
    SettingsError,
    seconds_setting,
    setting,
)

__all__ = [
    "CORE_PREFIXES",
    "DATABASE_SCHEMES",
    "INTEGRATIONS_PACKAGE",
    "LOG_LEVELS",
    "TEST_ONLY_PREFIXES",
    "Environment",
    "EnvironmentModel",
    "EnvironmentSettings",
    "Settings",
    "SettingsError",
    "check_database_url",
    "check_http_url",
    "check_quota",
    "check_retry_schedule",
    "check_window",
    "environments",
    "export_dagster_home",
    "get_settings",
    "hide_password",
    "markdown_table",
    "owned_prefixes",
    "register_environment",
    "register_environment_secrets",
    "reset_settings",
    "seconds_setting",
    "setting",
    "shipped_environments",
    "unknown_variables",
    "url_password",
    "validate_at_load",
]
