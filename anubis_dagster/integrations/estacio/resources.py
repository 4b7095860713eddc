"""Estácio's, OneTrust's and the CEP lookup's credentials and quotas as Dagster resources.

Environment names are the current service's (reference §3), so operators move over without
renaming anything. Quotas, timeouts and the daily window come from the settings validated when
the code location loads (`anubis_dagster.settings`): a malformed one fails the load naming it.

Why credentials are optional here, unlike Kroton's: the delivery ops require the resources of
every configured adapter, and Dagster resolves a required `dg.EnvVar` for every run of those
ops, so a required Estácio credential that is not set would fail Kroton's runs too. A variable
that is set becomes a `dg.EnvVar` (read at run time, shown by name in the UI); one that is not
set is reported by `missing_settings()`, and the Estácio adapter refuses to start with the
names of what is missing.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field, field_validator

from anubis_dagster.clients.rate_limit import Quota
from anubis_dagster.integrations.estacio.mapping import RegisterWindow
from anubis_dagster.settings import get_settings

# the current service's volumes, which the reference says to treat as the limits (§3)
DEFAULT_ESTACIO_RATE_LIMIT = "40/3600"  # 40 registrations per run, hourly
DEFAULT_ONETRUST_RATE_LIMIT = "10/150"  # consent in chunks of 10, 150 s apart
# assumption: no volume is known for the CEP lookup; cheap reads, kept modest
DEFAULT_CEP_RATE_LIMIT = "120/60"
DEFAULT_TIMEOUT_SECONDS = 20.0

ESTACIO_RATE_ENV = "API_ESTACIO_RATE_LIMIT"
ONETRUST_RATE_ENV = "API_ONETRUST_RATE_LIMIT"
CEP_RATE_ENV = "API_ESTACIO_CEP_RATE_LIMIT"
WINDOW_ENV = "API_ESTACIO_REGISTER_WINDOW"


class EstacioApiResource(dg.ConfigurableResource):
    """Estácio's registration API (`x-canal` + `x-api-key` headers)."""

    base_url: str | None = Field(default=None, description="API_ESTACIO_NEW_BASE_URL")
    client_id: str | None = Field(default=None, description="API_ESTACIO_CLIENT_ID (x-canal)")
    token: str | None = Field(default=None, description="API_ESTACIO_NEW_TOKEN (x-api-key)")
    rate_limit: str = Field(default=DEFAULT_ESTACIO_RATE_LIMIT, description=ESTACIO_RATE_ENV)
    timeout_seconds: float = Field(default=DEFAULT_TIMEOUT_SECONDS)
    register_window: str | None = Field(
        default=None,
        description=f"{WINDOW_ENV}: daily registration window, e.g. 08:00-20:00 (empty = "
        "always); overrides the integration setting `register_window`",
    )

    @field_validator("rate_limit")
    @classmethod
    def _quota(cls, value: str) -> str:
        Quota.parse(value, name=ESTACIO_RATE_ENV)
        return value

    @field_validator("register_window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        RegisterWindow.parse(value, name=WINDOW_ENV)
        return value

    def missing_settings(self) -> list[str]:
        return _missing(
            {
                "API_ESTACIO_NEW_BASE_URL": self.base_url,
                "API_ESTACIO_CLIENT_ID": self.client_id,
                "API_ESTACIO_NEW_TOKEN": self.token,
            }
        )


class OneTrustResource(dg.ConfigurableResource):
    """Estácio's OneTrust consent API (`client_id` + `client_secret` headers)."""

    base_url: str | None = Field(default=None, description="API_ONETRUST_BASE_URL")
    client_id: str | None = Field(default=None, description="API_ONETRUST_CLIENT_ID")
    client_secret: str | None = Field(default=None, description="API_ONETRUST_CLIENT_SECRET")
    finalidade_id: str | None = Field(default=None, description="API_ONETRUST_FINALIDADE_ID")
    topico_id: str | None = Field(default=None, description="API_ONETRUST_TOPICO_ID")
    token: str | None = Field(
        default=None, description="API_ONETRUST_TOKEN (the collection point token)"
    )
    rate_limit: str = Field(default=DEFAULT_ONETRUST_RATE_LIMIT, description=ONETRUST_RATE_ENV)
    timeout_seconds: float = Field(default=DEFAULT_TIMEOUT_SECONDS)

    @field_validator("rate_limit")
    @classmethod
    def _quota(cls, value: str) -> str:
        Quota.parse(value, name=ONETRUST_RATE_ENV)
        return value

    def missing_settings(self) -> list[str]:
        return _missing(
            {
                "API_ONETRUST_BASE_URL": self.base_url,
                "API_ONETRUST_CLIENT_ID": self.client_id,
                "API_ONETRUST_CLIENT_SECRET": self.client_secret,
                "API_ONETRUST_FINALIDADE_ID": self.finalidade_id,
                "API_ONETRUST_TOPICO_ID": self.topico_id,
                "API_ONETRUST_TOKEN": self.token,
            }
        )


class EstacioCepResource(dg.ConfigurableResource):
    """Estácio's location lookup by CEP (municipality and district codes).

    assumption: it answers at `API_ESTACIO_CEP_BASE_URL` (default: Estácio's API base URL)
    with the registration API's headers."""

    base_url: str | None = Field(
        default=None, description="API_ESTACIO_CEP_BASE_URL (empty = API_ESTACIO_NEW_BASE_URL)"
    )
    rate_limit: str = Field(default=DEFAULT_CEP_RATE_LIMIT, description=CEP_RATE_ENV)
    timeout_seconds: float = Field(default=DEFAULT_TIMEOUT_SECONDS)

    @field_validator("rate_limit")
    @classmethod
    def _quota(cls, value: str) -> str:
        Quota.parse(value, name=CEP_RATE_ENV)
        return value


def _missing(values: dict[str, str | None]) -> list[str]:
    return [name for name, value in values.items() if not value]


def estacio_resources() -> dict[str, dg.ConfigurableResource]:
    """The three resources, keyed as `EstacioAdapter.resource_keys` says. A set credential
    becomes a `dg.EnvVar` (resolved at run start, never shown); an unset one stays None."""
    settings = get_settings()

    def env(name: str) -> dg.EnvVar | None:
        return dg.EnvVar(name) if settings.is_set(name) else None

    return {
        "estacio_api": EstacioApiResource(
            base_url=env("API_ESTACIO_NEW_BASE_URL"),
            client_id=env("API_ESTACIO_CLIENT_ID"),
            token=env("API_ESTACIO_NEW_TOKEN"),
            rate_limit=settings.api_estacio_rate_limit,
            timeout_seconds=settings.api_estacio_timeout_seconds,
            register_window=settings.api_estacio_register_window,
        ),
        "estacio_onetrust": OneTrustResource(
            base_url=env("API_ONETRUST_BASE_URL"),
            client_id=env("API_ONETRUST_CLIENT_ID"),
            client_secret=env("API_ONETRUST_CLIENT_SECRET"),
            finalidade_id=env("API_ONETRUST_FINALIDADE_ID"),
            topico_id=env("API_ONETRUST_TOPICO_ID"),
            token=env("API_ONETRUST_TOKEN"),
            rate_limit=settings.api_onetrust_rate_limit,
            timeout_seconds=settings.api_onetrust_timeout_seconds,
        ),
        "estacio_cep": EstacioCepResource(
            base_url=env("API_ESTACIO_CEP_BASE_URL"),
            rate_limit=settings.api_estacio_cep_rate_limit,
            timeout_seconds=settings.api_estacio_cep_timeout_seconds,
        ),
    }
