"""Kroton's `settings` in the integrations file, validated at load (`extra="forbid"`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from anubis_dagster.integrations.base_settings import IntegrationSettings

DEFAULT_CATALOG_CACHE_SECONDS = 3600.0


class DefaultAddress(BaseModel):
    """The address sent when an order's is incomplete (the current service's fallback)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    zipcode: str = Field(pattern=r"^\d{5}-?\d{3}$", description="CEP, 8 digits")
    address: str = Field(min_length=1)
    address_number: str | int
    city: str = Field(min_length=1)
    state: str = Field(pattern=r"^[A-Za-z]{2}$", description="UF, two letters")

    @field_validator("address_number")
    @classmethod
    def _number(cls, value: str | int) -> str | int:
        if str(value).strip() == "":
            raise ValueError("must not be empty")
        return value


class KrotonOriginSettings(BaseModel):
    """Per-marketplace identifiers Kroton needs in every registration (`origins.<origin>`):
    a typo here would refuse every student of that marketplace, so it fails the load."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    canal_vendas_id: int = Field(ge=1, description="canalVendas.id")
    id_afiliado: str = Field(min_length=1, description="idAfiliado")
    id_tipo_prova: int = Field(ge=1, description="idTipoProva")


class KrotonSettings(IntegrationSettings):
    """What the Kroton adapter reads from its integration's `settings`."""

    catalog_cache_seconds: float = Field(
        default=DEFAULT_CATALOG_CACHE_SECONDS,
        ge=0,
        allow_inf_nan=False,
        description="identical catalog queries reuse the answer this long (0 = no cache)",
    )
    default_address: DefaultAddress | None = Field(
        default=None, description="address for orders whose own is incomplete (None = refuse)"
    )
