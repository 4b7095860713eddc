"""Kroton's credentials and quotas as Dagster resources (environment names of the current
Node service, so operators can move over without renaming anything).

Credentials are `dg.EnvVar`s, so their values never show in the UI. Every integration's
resources are built for every delivery run, so an unset credential is not an error here (an
Estácio run must not need Kroton's secrets): `missing_settings()` names what is unset and the
Kroton adapter refuses to start a Kroton run without it. Quotas and timeouts come from the
validated settings (`anubis_dagster.settings`), so a malformed one fails the load naming it.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field, field_validator

from anubis_dagster.clients.rate_limit import Quota
from anubis_dagster.settings import Settings, get_settings

DEFAULT_RATE_LIMIT = "100/300"  # Kroton: 100 requests per 5 minutes, API and catalog each


class KrotonApiResource(dg.ConfigurableResource):
    """Kroton's inscription API (OAuth2 client credentials + APIM subscription key)."""

    base_url: str | None = Field(default=None, description="API_KROTON_BASE_URL")
    client_id: str | None = Field(default=None, description="API_KROTON_CLIENT_ID")
    secret: str | None = Field(default=None, description="API_KROTON_SECRET")
    subscription: str | None = Field(
        default=None, description="API_KROTON_SUBSCRIPTION (scope and APIM key)"
    )
    rate_limit: str = Field(default=DEFAULT_RATE_LIMIT, description="API_KROTON_RATE_LIMIT")
    timeout_seconds: float = Field(default=20.0, description="read timeout per request")
    # The captação API (e-mail/password) of the current service is not used by any flow yet;
    # its settings are accepted so the same environment works unchanged.
    base_url_captacao: str | None = Field(default=None, description="API_KROTON_BASE_URL_CAPTACAO")
    email: str | None = Field(default=None, description="API_KROTON_EMAIL")
    password: str | None = Field(default=None, description="API_KROTON_PASSWORD")

    @field_validator("rate_limit")
    @classmethod
    def _quota(cls, value: str) -> str:
        Quota.parse(value, name="API_KROTON_RATE_LIMIT")
        return value

    def missing_settings(self) -> list[str]:
        values = {
            "API_KROTON_BASE_URL": self.base_url,
            "API_KROTON_CLIENT_ID": self.client_id,
            "API_KROTON_SECRET": self.secret,
            "API_KROTON_SUBSCRIPTION": self.subscription,
        }
        return [name for name, value in values.items() if not value]


class KrotonCatalogResource(dg.ConfigurableResource):
    """Kroton's offer catalog (Elasticsearch middleware, `Authorization: apiKey`)."""

    base_url: str | None = Field(default=None, description="CATALOG_KROTON_BASE_URL")
    api_key: str | None = Field(default=None, description="CATALOG_KROTON_API_KEY")
    rate_limit: str = Field(default=DEFAULT_RATE_LIMIT, description="CATALOG_KROTON_RATE_LIMIT")
    timeout_seconds: float = Field(default=20.0)

    @field_validator("rate_limit")
    @classmethod
    def _quota(cls, value: str) -> str:
        Quota.parse(value, name="CATALOG_KROTON_RATE_LIMIT")
        return value

    def missing_settings(self) -> list[str]:
        values = {"CATALOG_KROTON_BASE_URL": self.base_url, "CATALOG_KROTON_API_KEY": self.api_key}
        return [name for name, value in values.items() if not value]


def _optional_env(settings: Settings, name: str) -> dg.EnvVar | None:
    """A set variable as a `dg.EnvVar` (its value resolved at run start, never shown)."""
    return dg.EnvVar(name) if settings.is_set(name) else None


def kroton_resources() -> dict[str, dg.ConfigurableResource]:
    """Secrets as `dg.EnvVar`s (read when a run starts); quotas and timeouts from the
    settings validated at load."""
    settings = get_settings()

    def env(name: str) -> dg.EnvVar | None:
        return _optional_env(settings, name)

    return {
        "kroton_api": KrotonApiResource(
            base_url=env("API_KROTON_BASE_URL"),
            client_id=env("API_KROTON_CLIENT_ID"),
            secret=env("API_KROTON_SECRET"),
            subscription=env("API_KROTON_SUBSCRIPTION"),
            rate_limit=settings.api_kroton_rate_limit,
            timeout_seconds=settings.api_kroton_timeout_seconds,
            base_url_captacao=env("API_KROTON_BASE_URL_CAPTACAO"),
            email=env("API_KROTON_EMAIL"),
            password=env("API_KROTON_PASSWORD"),
        ),
        "kroton_catalog": KrotonCatalogResource(
            base_url=env("CATALOG_KROTON_BASE_URL"),
            api_key=env("CATALOG_KROTON_API_KEY"),
            rate_limit=settings.catalog_kroton_rate_limit,
            timeout_seconds=settings.catalog_kroton_timeout_seconds,
        ),
    }
