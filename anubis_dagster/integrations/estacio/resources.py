"""Estácio's, OneTrust's and the CEP lookup's APIs as Dagster resources, each yielding its
ready client (`anubis_dagster.integrations.partner_api`).

Environment names are the current service's (reference §3), so operators move over without
renaming anything. Quotas, timeouts and the daily window come from the settings validated when
the code location loads (`anubis_dagster.settings`): a malformed one fails the load naming it.
No tokens: static headers on every call.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from anubis_dagster.integrations.estacio.mapping import RegisterWindow
from anubis_dagster.integrations.partner_api import PartnerApiResource, credential

WINDOW_ENV = "API_ESTACIO_REGISTER_WINDOW"


class EstacioApiResource(PartnerApiResource):
    """Estácio's registration API (`x-canal` + `x-api-key` headers)."""

    base_url: str | None = credential("API_ESTACIO_NEW_BASE_URL")
    client_id: str | None = credential("API_ESTACIO_CLIENT_ID", "x-canal")
    token: str | None = credential("API_ESTACIO_NEW_TOKEN", "x-api-key")
    register_window: str | None = Field(
        default=None,
        description=f"{WINDOW_ENV}: daily registration window, e.g. 08:00-20:00 (empty = "
        "always); overrides the integration setting `register_window`",
    )

    client_name: ClassVar[str] = "estacio"
    settings_prefix: ClassVar[str] = "api_estacio"
    tunables: ClassVar[tuple[str, ...]] = ("rate_limit", "timeout_seconds", "register_window")

    @field_validator("register_window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        RegisterWindow.parse(value, name=WINDOW_ENV)
        return value

    def headers(self, token: str | None) -> dict[str, str]:
        return {"x-canal": str(self.client_id), "x-api-key": str(self.token)}


class EstacioCepResource(EstacioApiResource):
    """Estácio's location lookup by CEP (municipality and district codes), on a quota of its
    own. assumption: it answers at `API_ESTACIO_CEP_BASE_URL` (default: Estácio's API base URL)
    with the registration API's headers."""

    base_url: str | None = credential(("API_ESTACIO_CEP_BASE_URL", "API_ESTACIO_NEW_BASE_URL"))

    client_name: ClassVar[str] = "estacio-cep"
    bucket: ClassVar[str] = "cep"
    settings_prefix: ClassVar[str] = "api_estacio_cep"
    tunables: ClassVar[tuple[str, ...]] = ("rate_limit", "timeout_seconds")


class OneTrustResource(PartnerApiResource):
    """Estácio's OneTrust consent API (`client_id` + `client_secret` headers), and the ids
    every consent it records carries."""

    base_url: str | None = credential("API_ONETRUST_BASE_URL")
    client_id: str | None = credential("API_ONETRUST_CLIENT_ID")
    client_secret: str | None = credential("API_ONETRUST_CLIENT_SECRET")
    finalidade_id: str | None = credential("API_ONETRUST_FINALIDADE_ID", "consent purpose")
    topico_id: str | None = credential("API_ONETRUST_TOPICO_ID", "consent topic")
    token: str | None = credential("API_ONETRUST_TOKEN", "the collection point token")

    client_name: ClassVar[str] = "onetrust"
    bucket: ClassVar[str] = "onetrust"
    settings_prefix: ClassVar[str] = "api_onetrust"
    #: what the API checks on the call itself; the ids only go into consent bodies
    credentials: ClassVar[tuple[str, ...]] = (
        "API_ONETRUST_BASE_URL",
        "API_ONETRUST_CLIENT_ID",
        "API_ONETRUST_CLIENT_SECRET",
    )

    def headers(self, token: str | None) -> dict[str, str]:
        return {"client_id": str(self.client_id), "client_secret": str(self.client_secret)}


#: resource key → resource, as the Estácio adapter reads them
ESTACIO_APIS: dict[str, type[PartnerApiResource]] = {
    "estacio_api": EstacioApiResource,
    "estacio_onetrust": OneTrustResource,
    "estacio_cep": EstacioCepResource,
}
