"""`IntegrationSettings`: the `settings` every integration accepts in the integrations file;
an adapter's `settings_model` extends it.

It lives with the integrations, not in `config.integrations`, so the adapters' base
(`integrations.base`) does not import the file parser that checks settings against the
adapters: that pair of imports was a cycle (`config.integrations` ↔ `integrations.base`).
`config.integrations` still re-exports it for older imports.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from anubis_dagster.settings import check_retry_schedule


class IntegrationSettings(BaseModel):
    """The `settings` every integration accepts; an adapter's `settings_model` extends it.

    Strict types: `catalog_cache_seconds: "3600"` is a mistake to report, not to coerce."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    retry_schedule: str | None = Field(
        default=None,
        description="this integration's retry schedule (overrides ANUBIS_RETRY_SCHEDULE)",
    )

    @field_validator("retry_schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is not None:
            check_retry_schedule(value)
        return value
