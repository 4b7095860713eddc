"""Estácio's `settings` in the integrations file, validated at load (`extra="forbid"`)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from anubis_dagster.core.daily_window import DEFAULT_TIMEZONE
from anubis_dagster.integrations.base_settings import IntegrationSettings
from anubis_dagster.settings import check_window


class EstacioSettings(IntegrationSettings):
    """What the Estácio adapter reads from its integration's `settings`."""

    register_window: str | None = Field(
        default=None,
        description="daily registration window HH:MM-HH:MM (None = any time); "
        "API_ESTACIO_REGISTER_WINDOW wins over it",
    )
    register_timezone: str = Field(
        default=DEFAULT_TIMEZONE, description="IANA time zone of the window"
    )

    @field_validator("register_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _window(self) -> EstacioSettings:
        try:
            check_window(self.register_window, self.register_timezone)
        except ValueError as exc:
            raise ValueError(f"register_window {exc}") from None
        return self
