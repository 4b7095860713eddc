"""The integrations configuration file: parsed, validated, and synced into the app DB.

`anubis_dagster/config/integrations.yaml` is the versioned default; `ANUBIS_INTEGRATIONS_FILE`
points at another. The file is the source of truth: each run syncs it into `integrations` and
`integration_filters`, so operators change routing with a reviewed commit, not ad-hoc SQL.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from anubis_dagster.core.orders import ORIGINS
from anubis_dagster.core.routing import FILTER_KEY_PATHS, NON_MATCH_KEYS
from anubis_dagster.db.models import Integration, IntegrationFilter

DEFAULT_FILE = Path(__file__).with_name("integrations.yaml")
FILE_ENV = "ANUBIS_INTEGRATIONS_FILE"


class ConfigError(ValueError):
    """The integrations file is missing or invalid; the message says where."""


class FilterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["qb_offer"] = "qb_offer"
    enabled: bool = True
    filter: dict[str, Any] = Field(default_factory=dict)

    @field_validator("filter")
    @classmethod
    def _known_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = set(value) - set(FILTER_KEY_PATHS) - NON_MATCH_KEYS
        if unknown:
            raise ValueError(f"unknown filter keys: {', '.join(sorted(unknown))}")
        for key, allowed in value.items():
            if key in FILTER_KEY_PATHS and allowed is not None and not isinstance(allowed, list):
                raise ValueError(f"filter key {key} must be a list")
        fields = value.get("required_fields", [])
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise ValueError("required_fields must be a list of dotted order paths")
        return value


class IntegrationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str
    type: str
    interval: int = Field(default=5, ge=1, description="minutes between due-work runs")
    enabled: bool = True
    filters: list[FilterConfig] = Field(min_length=1)
    origins: dict[str, dict[str, Any]] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("origins")
    @classmethod
    def _known_origins(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = set(value) - set(ORIGINS)
        if unknown:
            raise ValueError(f"unknown origins: {', '.join(sorted(unknown))}")
        return value


class IntegrationsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = 1
    integrations: list[IntegrationConfig]

    @field_validator("integrations")
    @classmethod
    def _unique_keys(cls, value: list[IntegrationConfig]) -> list[IntegrationConfig]:
        keys = [i.key for i in value]
        if len(keys) != len(set(keys)):
            raise ValueError("integration keys must be unique")
        return value

    def get(self, key: str) -> IntegrationConfig:
        for integration in self.integrations:
            if integration.key == key:
                return integration
        raise KeyError(key)


def config_path() -> Path:
    return Path(os.environ.get(FILE_ENV) or DEFAULT_FILE)


def load_integrations(path: Path | None = None) -> IntegrationsFile:
    path = path or config_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return IntegrationsFile.model_validate(raw)
    except FileNotFoundError as exc:
        raise ConfigError(f"integrations file not found: {path}") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"invalid integrations file {path}:\n{exc}") from exc


def sync_integrations(session: Session, config: IntegrationsFile) -> dict[str, Integration]:
    """Upsert the file's integrations and filters; integrations no longer in the file are
    disabled (never deleted: their subscriptions and history stay)."""
    existing = {i.key: i for i in session.scalars(select(Integration))}
    for item in config.integrations:
        integration = existing.get(item.key) or Integration(key=item.key)
        integration.name = item.name
        integration.type = item.type
        integration.interval = item.interval
        integration.enabled = item.enabled
        integration.settings = {"origins": item.origins, **item.settings}
        session.add(integration)
        session.flush()
        existing[item.key] = integration
        filters = {
            f.position: f
            for f in session.scalars(
                select(IntegrationFilter).where(IntegrationFilter.integration_id == integration.id)
            )
        }
        for position, filter_config in enumerate(item.filters):
            row = filters.pop(position, None) or IntegrationFilter(
                integration_id=integration.id, position=position
            )
            row.type = filter_config.type
            row.enabled = filter_config.enabled
            row.filter = filter_config.filter
            session.add(row)
        for leftover in filters.values():
            leftover.enabled = False
    configured = {i.key for i in config.integrations}
    for key, integration in existing.items():
        if key not in configured:
            integration.enabled = False
    session.flush()
    return existing
