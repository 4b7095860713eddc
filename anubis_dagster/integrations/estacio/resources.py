"""Estácio's, OneTrust's and the CEP lookup's credentials and quotas as Dagster resources.

Environment names are the current service's (reference §3), so operators move over without
renaming anything. Quotas and the daily window are read when the code location loads, and a
malformed one fails the load with the variable's name.

Why credentials are optional here, unlike Kroton's: the delivery ops require the resources of
every configured adapter, and Dagster resolves a required `dg.EnvVar` for every run of those
ops, so a required Estácio credential that is not set would fail Kroton's runs too. A variable
that is set becomes a `dg.EnvVar` (read at run time, shown by name in the UI); one that is not
set is reported by `missing_settings()`, and the Estácio adapter refuses to start with the
names of what is missing.
"""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field, field_validator

from anubis_dagster.clients.rate_limit import Quota
from anubis_dagster.integrations.estacio.mapping import RegisterWindow

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


def _env(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if os.environ.get(name) else None


def _setting(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _seconds(name: str) -> float:
    text = _setting(name, str(DEFAULT_TIMEOUT_SECONDS))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {text!r}")
    return value


def estacio_resources() -> dict[str, dg.ConfigurableResource]:
    """The three resources, keyed as `EstacioAdapter.resource_keys` says."""
    estacio_quota = _setting(ESTACIO_RATE_ENV, DEFAULT_ESTACIO_RATE_LIMIT)
    onetrust_quota = _setting(ONETRUST_RATE_ENV, DEFAULT_ONETRUST_RATE_LIMIT)
    cep_quota = _setting(CEP_RATE_ENV, DEFAULT_CEP_RATE_LIMIT)
    for value, name in (
        (estacio_quota, ESTACIO_RATE_ENV),
        (onetrust_quota, ONETRUST_RATE_ENV),
        (cep_quota, CEP_RATE_ENV),
    ):
        Quota.parse(value, name=name)  # a typo fails the load, naming the variable
    window = os.environ.get(WINDOW_ENV) or None
    RegisterWindow.parse(window, name=WINDOW_ENV)
    return {
        "estacio_api": EstacioApiResource(
            base_url=_env("API_ESTACIO_NEW_BASE_URL"),
            client_id=_env("API_ESTACIO_CLIENT_ID"),
            token=_env("API_ESTACIO_NEW_TOKEN"),
            rate_limit=estacio_quota,
            timeout_seconds=_seconds("API_ESTACIO_TIMEOUT_SECONDS"),
            register_window=window,
        ),
        "estacio_onetrust": OneTrustResource(
            base_url=_env("API_ONETRUST_BASE_URL"),
            client_id=_env("API_ONETRUST_CLIENT_ID"),
            client_secret=_env("API_ONETRUST_CLIENT_SECRET"),
            finalidade_id=_env("API_ONETRUST_FINALIDADE_ID"),
            topico_id=_env("API_ONETRUST_TOPICO_ID"),
            token=_env("API_ONETRUST_TOKEN"),
            rate_limit=onetrust_quota,
            timeout_seconds=_seconds("API_ONETRUST_TIMEOUT_SECONDS"),
        ),
        "estacio_cep": EstacioCepResource(
            base_url=_env("API_ESTACIO_CEP_BASE_URL"),
            rate_limit=cep_quota,
            timeout_seconds=_seconds("API_ESTACIO_CEP_TIMEOUT_SECONDS"),
        ),
    }
