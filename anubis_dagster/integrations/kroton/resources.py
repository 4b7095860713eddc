"""Kroton's credentials and quotas as Dagster resources (environment names of the current
Node service, so operators can move over without renaming anything)."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field, field_validator

from anubis_dagster.clients.rate_limit import Quota

DEFAULT_RATE_LIMIT = "100/300"  # Kroton: 100 requests per 5 minutes, API and catalog each


class KrotonApiResource(dg.ConfigurableResource):
    """Kroton's inscription API (OAuth2 client credentials + APIM subscription key)."""

    base_url: str = Field(description="API_KROTON_BASE_URL")
    client_id: str = Field(description="API_KROTON_CLIENT_ID")
    secret: str = Field(description="API_KROTON_SECRET")
    subscription: str = Field(description="API_KROTON_SUBSCRIPTION (scope and APIM key)")
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


class KrotonCatalogResource(dg.ConfigurableResource):
    """Kroton's offer catalog (Elasticsearch middleware, `Authorization: apiKey`)."""

    base_url: str = Field(description="CATALOG_KROTON_BASE_URL")
    api_key: str = Field(description="CATALOG_KROTON_API_KEY")
    rate_limit: str = Field(default=DEFAULT_RATE_LIMIT, description="CATALOG_KROTON_RATE_LIMIT")
    timeout_seconds: float = Field(default=20.0)

    @field_validator("rate_limit")
    @classmethod
    def _quota(cls, value: str) -> str:
        Quota.parse(value, name="CATALOG_KROTON_RATE_LIMIT")
        return value


def _optional_env(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if os.environ.get(name) else None


def kroton_resources() -> dict[str, dg.ConfigurableResource]:
    """Secrets are `dg.EnvVar`s, read when a run starts (a missing one fails the run with its
    name); the quotas are read now, and a malformed one fails the code location's load."""
    api_quota = os.environ.get("API_KROTON_RATE_LIMIT", DEFAULT_RATE_LIMIT)
    catalog_quota = os.environ.get("CATALOG_KROTON_RATE_LIMIT", DEFAULT_RATE_LIMIT)
    Quota.parse(api_quota, name="API_KROTON_RATE_LIMIT")
    Quota.parse(catalog_quota, name="CATALOG_KROTON_RATE_LIMIT")
    return {
        "kroton_api": KrotonApiResource(
            base_url=dg.EnvVar("API_KROTON_BASE_URL"),
            client_id=dg.EnvVar("API_KROTON_CLIENT_ID"),
            secret=dg.EnvVar("API_KROTON_SECRET"),
            subscription=dg.EnvVar("API_KROTON_SUBSCRIPTION"),
            rate_limit=api_quota,
            timeout_seconds=float(os.environ.get("API_KROTON_TIMEOUT_SECONDS", "20")),
            base_url_captacao=_optional_env("API_KROTON_BASE_URL_CAPTACAO"),
            email=_optional_env("API_KROTON_EMAIL"),
            password=_optional_env("API_KROTON_PASSWORD"),
        ),
        "kroton_catalog": KrotonCatalogResource(
            base_url=dg.EnvVar("CATALOG_KROTON_BASE_URL"),
            api_key=dg.EnvVar("CATALOG_KROTON_API_KEY"),
            rate_limit=catalog_quota,
            timeout_seconds=float(os.environ.get("CATALOG_KROTON_TIMEOUT_SECONDS", "20")),
        ),
    }
