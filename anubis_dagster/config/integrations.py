"""The integrations configuration file: parsed, validated, and synced into the app DB.

`anubis_dagster/config/integrations.yaml` is the versioned default; `ANUBIS_INTEGRATIONS_FILE`
points at another. The file is the source of truth: each run syncs it into `integrations` and
`integration_filters`, so operators change routing with a reviewed commit, not ad-hoc SQL.

Each integration's `settings` block is validated by its adapter's `settings_model` (a pydantic
model with `extra="forbid"`, built on `IntegrationSettings`): an unknown key or a wrong type is
an error naming the integration and the key, at load, not a `KeyError` hours later in a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from anubis_dagster.core.orders import ORIGINS
from anubis_dagster.core.routing import FILTER_KEY_PATHS, NON_MATCH_KEYS
from anubis_dagster.db.models import Integration, IntegrationFilter
from anubis_dagster.integrations.base_settings import (
    IntegrationSettings as IntegrationSettings,  # re-exported for older imports
)
from anubis_dagster.settings import check_retry_schedule, get_settings

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
    return Path(get_settings().anubis_integrations_file or DEFAULT_FILE)


def load_integrations(path: Path | None = None) -> IntegrationsFile:
    """Parse and validate the file, each integration's `settings` included (for the adapters
    that are registered; an unknown `type` is reported by `settings_problems`)."""
    path = path or config_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        config = IntegrationsFile.model_validate(raw)
    except FileNotFoundError:
        raise ConfigError(f"integrations file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid integrations file {path}: not YAML ({exc})") from None
    except ValidationError as exc:
        raise ConfigError(_describe(path, _errors(exc, raw))) from None
    problems = settings_problems(config, unknown_types=False)
    if problems:
        raise ConfigError(_describe(path, problems))
    return config


def settings_problems(
    config: IntegrationsFile, *, unknown_types: bool = True, production: bool = False
) -> list[str]:
    """Every integration's `settings` against its adapter's `settings_model`; one line per
    problem, naming the integration and the key. `unknown_types`: report an integration whose
    adapter is not registered (False while only parsing the file: a test adapter registers
    itself later, when its module is imported). `production`: also refuse what only tests
    should use (a 0 retry delay), as `anubis doctor` does."""
    from anubis_dagster.integrations.base import UnknownIntegrationType, adapter_class

    problems = []
    for item in config.integrations:
        schedule = item.settings.get("retry_schedule")
        if production and isinstance(schedule, str):
            try:
                check_retry_schedule(schedule, allow_zero=False)
            except ValueError as exc:
                problems.append(f"integration {item.key!r}: settings.retry_schedule: {exc}")
        try:
            model = adapter_class(item.type).settings_model
        except UnknownIntegrationType:
            if unknown_types:
                problems.append(f"integration {item.key!r}: unknown type {item.type!r}")
            continue
        problems += _validate(item.key, "settings", model, item.settings)
        origin_model = getattr(adapter_class(item.type), "origin_settings_model", None)
        if origin_model is not None:
            problems += _origin_problems(item, origin_model)
    return problems


def _validate(key: str, where: str, model: type[BaseModel], values: Any) -> list[str]:
    try:
        model.model_validate(values)
    except ValidationError as exc:
        return [
            f"integration {key!r}: {'.'.join([where, *(str(p) for p in error['loc'])])}: "
            + _message(error)
            for error in exc.errors()
        ]
    return []


def _origin_problems(item: IntegrationConfig, model: type[BaseModel]) -> list[str]:
    """Each `origins.<origin>` against the adapter's model, and every origin the filters route
    to the integration must have its block (or each of its students is refused)."""
    problems = []
    for origin, values in item.origins.items():
        problems += _validate(item.key, f"origins.{origin}", model, values)
    routed: set[str] = set()
    for filter_config in item.filters:
        if filter_config.enabled:
            routed.update(filter_config.filter.get("origins") or ORIGINS)
    for origin in sorted(routed - set(item.origins)):
        problems.append(
            f"integration {item.key!r}: origins.{origin} is missing, and its filters route "
            f"{origin} orders to it"
        )
    return problems


def _errors(exc: ValidationError, raw: Any) -> list[str]:
    """Pydantic's errors as `integration 'key': path: message` lines."""
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "integrations" and isinstance(loc[1], int):
            try:
                where = f"integration {raw['integrations'][loc[1]].get('key')!r}: "
            except (KeyError, IndexError, TypeError, AttributeError):
                where = f"integrations[{loc[1]}]: "
            loc = loc[2:]
        path = ".".join(str(part) for part in loc)
        message = _message(error)
        lines.append(f"{where}{path + ': ' if path else ''}{message}")
    return lines


_READABLE = {
    "extra_forbidden": "unknown key (not a setting of this adapter; check the spelling)",
    "missing": "required",
}


def _message(error: Any) -> str:
    """Pydantic's message in a settings file's words (unknown key, required, …)."""
    if error["type"] in _READABLE:
        return _READABLE[error["type"]]
    return str(error["msg"]).removeprefix("Value error, ")


def _describe(path: Path, problems: list[str]) -> str:
    return f"invalid integrations file {path}:\n" + "\n".join(f"  - {p}" for p in problems)


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
