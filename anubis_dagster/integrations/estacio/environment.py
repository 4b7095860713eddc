"""Estácio's environment variables: its registration API, the CEP lookup and OneTrust consent.

Owned by this package and composed into the core's `Settings` (found by convention: the core
imports `integrations/<name>/environment.py`), so they are validated at load, shown by
`anubis doctor`, checked for typos (`API_ESTACIO_*`, `API_ONETRUST_*`) and listed in the
README's table like the core's. The names are the current service's (reference §3):
deployments keep their environment unchanged. The resources (`resources.py`) read them by name.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr, field_validator

from anubis_dagster.settings import (
    EnvironmentSettings,
    check_window,
    register_environment,
    seconds_setting,
    setting,
)


@register_environment
class EstacioEnvironment(EnvironmentSettings):
    """Estácio's API, its CEP lookup and its OneTrust consent API (URLs and quotas are checked
    by name; the daily window here)."""

    prefixes: ClassVar[tuple[str, ...]] = ("API_ESTACIO_", "API_ONETRUST_")

    api_estacio_new_base_url: str | None = setting(
        None, "Estácio registration API", group="estacio"
    )
    api_estacio_client_id: str | None = setting(None, "`x-canal` header", group="estacio")
    api_estacio_new_token: SecretStr | None = setting(None, "`x-api-key` header", group="estacio")
    api_estacio_rate_limit: str = setting(
        "40/3600", "Estácio API quota, `REQUESTS/SECONDS`", group="estacio"
    )
    api_estacio_timeout_seconds: float = seconds_setting(20.0, "read timeout", group="estacio")
    api_estacio_register_window: str | None = setting(
        None,
        "daily registration window, e.g. `08:00-20:00` (America/Sao_Paulo); overrides the "
        "integration's `register_window`",
        group="estacio",
        shown_default="unset (always)",
    )
    api_estacio_cep_base_url: str | None = setting(
        None,
        "CEP lookup (municipality and district codes)",
        group="estacio",
        shown_default="Estácio's base URL",
    )
    api_estacio_cep_rate_limit: str = setting(
        "120/60", "CEP lookup quota, `REQUESTS/SECONDS`", group="estacio"
    )
    api_estacio_cep_timeout_seconds: float = seconds_setting(20.0, "read timeout", group="estacio")
    api_onetrust_base_url: str | None = setting(None, "Estácio's OneTrust consent", group="estacio")
    api_onetrust_client_id: str | None = setting(None, "`client_id` header", group="estacio")
    api_onetrust_client_secret: SecretStr | None = setting(
        None, "`client_secret` header", group="estacio"
    )
    api_onetrust_finalidade_id: str | None = setting(None, "consent purpose id", group="estacio")
    api_onetrust_topico_id: str | None = setting(None, "consent topic id", group="estacio")
    api_onetrust_token: SecretStr | None = setting(None, "collection point token", group="estacio")
    api_onetrust_rate_limit: str = setting(
        "10/150", "OneTrust quota, `REQUESTS/SECONDS`", group="estacio"
    )
    api_onetrust_timeout_seconds: float = seconds_setting(20.0, "read timeout", group="estacio")

    @field_validator("api_estacio_register_window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        check_window(value)
        return value
