"""Kroton's credentials and quotas as Dagster resources (environment names of the current
Node service, so operators can move over without renaming anything).

Credentials are `dg.EnvVar`s, so their values never show in the UI. Every integration's
resources are built for every delivery run, so an unset credential is not an error here (an
Estácio run must not need Kroton's secrets): `missing_settings()` names what is unset and the
Kroton adapter refuses to start a Kroton run without it. A malformed quota fails the load.
"""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field, field_validator

from anubis_dagster.clients.rate_limit import Quota

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


def _optional_env(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if os.environ.get(name) else None


def kroton_resources() -> dict[str, dg.ConfigurableResource]:
    """Secrets as `dg.EnvVar`s (read when a run starts); quotas read now, a malformed one
    fails the code location's load naming its variable."""
    api_quota = os.environ.get("API_KROTON_RATE_LIMIT", DEFAULT_RATE_LIMIT)
    catalog_quota = os.environ.get("CATALOG_KROTON_RATE_LIMIT", DEFAULT_RATE_LIMIT)
    Quota.parse(api_quota, name="API_KROTON_RATE_LIMIT")
    Quota.parse(catalog_quota, name="CATALOG_KROTON_RATE_LIMIT")
    return {
        "kroton_api": KrotonApiResource(
            base_url=_optional_env("API_KROTON_BASE_URL"),
            client_id=_optional_env("API_KROTON_CLIENT_ID"),
            secret=_optional_env("API_KROTON_SECRET"),
            subscription=_optional_env("API_KROTON_SUBSCRIPTION"),
            rate_limit=api_quota,
            timeout_seconds=float(os.environ.get("API_KROTON_TIMEOUT_SECONDS", "20")),
            base_url_captacao=_optional_env("API_KROTON_BASE_URL_CAPTACAO"),
            email=_optional_env("API_KROTON_EMAIL"),
            password=_optional_env("API_KROTON_PASSWORD"),
        ),
        "kroton_catalog": KrotonCatalogResource(
            base_url=_optional_env("CATALOG_KROTON_BASE_URL"),
            api_key=_optional_env("CATALOG_KROTON_API_KEY"),
            rate_limit=catalog_quota,
            timeout_seconds=float(os.environ.get("CATALOG_KROTON_TIMEOUT_SECONDS", "20")),
        ),
    }
