"""Kroton's environment variables: its three APIs' URLs, credentials, quotas and timeouts.

Owned by this package and composed into the core's `Settings` (found by convention: the core
imports `integrations/<name>/environment.py`), so they are validated at load, shown by
`anubis doctor`, checked for typos (`API_KROTON_*`, `CATALOG_KROTON_*`) and listed in the
README's table like the core's. The names are the current Node service's: deployments keep
their environment unchanged. The resources (`resources.py`) read them by name.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr

from anubis_dagster.settings import (
    EnvironmentSettings,
    register_environment,
    seconds_setting,
    setting,
)


@register_environment
class KrotonEnvironment(EnvironmentSettings):
    """Kroton's API, Captação API and catalog (URLs and quotas are checked by name)."""

    prefixes: ClassVar[tuple[str, ...]] = ("API_KROTON_", "CATALOG_KROTON_")

    api_kroton_base_url: str | None = setting(None, "Kroton API", group="kroton")
    api_kroton_client_id: str | None = setting(None, "OAuth2 client id", group="kroton")
    api_kroton_secret: SecretStr | None = setting(None, "OAuth2 client secret", group="kroton")
    api_kroton_subscription: SecretStr | None = setting(
        None, "OAuth2 scope and APIM subscription key", group="kroton"
    )
    api_kroton_rate_limit: str = setting(
        "100/300", "Kroton API quota, `REQUESTS/SECONDS` (token calls count)", group="kroton"
    )
    api_kroton_timeout_seconds: float = seconds_setting(20.0, "read timeout", group="kroton")
    api_kroton_base_url_captacao: str | None = setting(
        None, "captação API (accepted for compatibility; no flow uses it yet)", group="kroton"
    )
    api_kroton_email: str | None = setting(None, "captação API user", group="kroton")
    api_kroton_password: SecretStr | None = setting(None, "captação API password", group="kroton")
    catalog_kroton_base_url: str | None = setting(
        None, "Kroton catalog (Elasticsearch middleware)", group="kroton"
    )
    catalog_kroton_api_key: SecretStr | None = setting(None, "catalog API key", group="kroton")
    catalog_kroton_rate_limit: str = setting(
        "100/300", "catalog quota, `REQUESTS/SECONDS`", group="kroton"
    )
    catalog_kroton_timeout_seconds: float = seconds_setting(20.0, "read timeout", group="kroton")
