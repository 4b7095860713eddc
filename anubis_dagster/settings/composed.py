"""The application's `Settings`: the core's variables (`variables.py`) with their checks,
composed with every integration's model (registered with `@register_environment`, or found as
`integrations/<name>/environment.py`), and cached per process by the values of its variables
(`get_settings()`); the typo check and the README's table read the composed model."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import pkgutil
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import PrivateAttr, SecretStr, field_validator, model_validator

from anubis_dagster.core.breaker import BreakerRule
from anubis_dagster.settings.checks import (
    check_database_url,
    check_http_url,
    check_retry_schedule,
    url_password,
)
from anubis_dagster.settings.model import Environment, EnvironmentSettings, SettingsError
from anubis_dagster.settings.variables import CoreVariables

#: the core's environment prefix; each integration's model adds its own (`owned_prefixes()`)
CORE_PREFIXES = ("ANUBIS_",)
#: where integration packages live: `<package>.<name>.environment` is imported by convention
INTEGRATIONS_PACKAGE = "anubis_dagster.integrations"
#: variables of the test suite, the benchmarks and the deploy tests, not of the application
TEST_ONLY_PREFIXES = ("ANUBIS_TEST_", "ANUBIS_BENCH_", "ANUBIS_DAGSTER_CHART")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class Settings(CoreVariables):
    """The application's environment. See the package docstring for the rules."""

    #: the integrations' models, as read with this one (`from_env`)
    _parts: dict[type[EnvironmentSettings], EnvironmentSettings] = PrivateAttr(default_factory=dict)

    # --- validators ---------------------------------------------------------------------------
    @field_validator(
        "anubis_database_url", "anubis_orders_database_url", "anubis_legacy_kroton_database_url"
    )
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_database_url(value.get_secret_value())
        return value

    @field_validator("anubis_ui_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_http_url(value)
        return value

    @field_validator("anubis_slack_webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                check_http_url(value.get_secret_value())
            except ValueError:
                # the URL itself is the credential: say what is wrong without echoing it
                raise ValueError("must be an http(s):// URL with a host") from None
        return value

    @field_validator("anubis_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        check_retry_schedule(value)
        return value

    @field_validator("anubis_digest_hour")
    @classmethod
    def _digest_hour(cls, value: str) -> str:
        if value.lower() == "off":
            return "off"
        if not value.isdigit() or not 0 <= int(value) <= 23:
            raise ValueError("must be an hour from 0 to 23, or off")
        return str(int(value))

    @field_validator("anubis_orders_table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not _IDENTIFIER.fullmatch(value):
            raise ValueError("must be a table name (letters, digits and underscores, at most 63)")
        return value

    @field_validator("anubis_integrations_file")
    @classmethod
    def _file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError("no such file")
        return value

    @field_validator("anubis_console_log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("anubis_events_topic_template")
    @classmethod
    def _topic_template(cls, value: str) -> str:
        topic = value.replace("{type}", "subscription.sent")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", topic):
            raise ValueError("must make a Kafka topic name (letters, digits, `._-`) with `{type}`")
        return value

    @model_validator(mode="after")
    def _check_bounds(self) -> Settings:
        if self.anubis_pii_open_retention_days < self.anubis_pii_retention_days:
            raise ValueError(
                "ANUBIS_PII_OPEN_RETENTION_DAYS must be at least ANUBIS_PII_RETENTION_DAYS "
                f"({self.anubis_pii_open_retention_days} < {self.anubis_pii_retention_days})"
            )
        if self.anubis_check_min_seconds > self.anubis_check_max_seconds:
            raise ValueError(
                "ANUBIS_CHECK_MIN_SECONDS must not exceed ANUBIS_CHECK_MAX_SECONDS "
                f"({self.anubis_check_min_seconds:g} > {self.anubis_check_max_seconds:g})"
            )
        if self.anubis_events_enabled and not self.anubis_kafka_bootstrap_servers:
            raise ValueError("ANUBIS_EVENTS_ENABLED needs ANUBIS_KAFKA_BOOTSTRAP_SERVERS")
        return self

    # --- reading ------------------------------------------------------------------------------
    @classmethod
    def variables(cls) -> tuple[str, ...]:
        """Every variable: the core's in declaration order, then each integration's."""
        return cls.own_variables() + tuple(
            variable for model in environments() for variable in model.own_variables()
        )

    @classmethod
    def secret_variables(cls) -> frozenset[str]:
        return cls.own_secret_variables().union(
            *(model.own_secret_variables() for model in environments())
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Validate the environment, the core's variables and every integration's;
        `SettingsError` lists every problem found."""
        env = os.environ if environ is None else environ
        settings, problems = cls.read(env)
        parts: dict[type[EnvironmentSettings], EnvironmentSettings] = {}
        for model in environments():
            part, found = model.read(env)
            problems += found
            if part is not None:
                parts[model] = part
        if settings is None or problems:
            raise SettingsError(problems)
        settings._parts = parts
        return settings

    def environment(self, model: type[Environment]) -> Environment:
        """The values of one integration's variables."""
        part = self._parts.get(model)
        if not isinstance(part, model):
            raise LookupError(f"{model.__name__} was not registered when the settings were read")
        return part

    def value(self, variable: str) -> Any:
        """The value of any variable, the core's or an integration's, by its name."""
        name = variable.lower()
        for part in (self, *self._parts.values()):
            if name in type(part).model_fields:
                return getattr(part, name)
        raise KeyError(f"{variable}: no such setting")

    # --- derived values -----------------------------------------------------------------------
    def home(self) -> Path:
        return Path(self.anubis_home).resolve()

    def database_url(self) -> str | None:
        """The app DB URL as configured (None = the embedded SQLite default)."""
        return _plain(self.anubis_database_url)

    def orders_database_url(self) -> str | None:
        return _plain(self.anubis_orders_database_url)

    def secret_values(self) -> list[str]:
        """Every secret value loaded: secret fields and the passwords in database URLs."""
        values = self.own_secret_values()
        for part in self._parts.values():
            values += part.own_secret_values()
        legacy = _plain(self.anubis_legacy_kroton_database_url)
        for url in (self.database_url(), self.orders_database_url(), legacy):
            password = url_password(url)
            if password:
                values.append(password)
        return [value for value in values if value]

    def production_problems(self) -> list[str]:
        """Values that load (the tests use them) but are wrong in production: the doctor's."""
        try:
            check_retry_schedule(self.anubis_retry_schedule, allow_zero=False)
        except ValueError as exc:
            return [f"ANUBIS_RETRY_SCHEDULE: {exc} (got {self.anubis_retry_schedule!r})"]
        return [f"ANUBIS_BREAKER_*: {p}" for p in self.breaker_rule().problems()]

    def breaker_rule(self) -> BreakerRule:
        """The circuit breaker's thresholds (issue 21)."""
        return BreakerRule(
            failures=self.anubis_breaker_failures,
            students=self.anubis_breaker_students,
            window_seconds=self.anubis_breaker_window_seconds,
            first_probe_seconds=self.anubis_breaker_probe_seconds,
            max_probe_seconds=self.anubis_breaker_max_probe_seconds,
        )

    def digest_hour(self) -> int | None:
        """The daily digest's hour, None when it is off."""
        return None if self.anubis_digest_hour == "off" else int(self.anubis_digest_hour)

    def is_set(self, variable: str) -> bool:
        return self.value(variable) is not None

    def effective(self) -> Iterator[tuple[str, str, str]]:
        """(variable, shown value, source) for the doctor: secrets as `set`, passwords hidden;
        the core's variables, then each integration's."""
        yield from self.own_effective()
        for part in self._parts.values():
            yield from part.own_effective()


def _plain(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


# --- the integrations' models ---------------------------------------------------------------
_environments: dict[str, type[EnvironmentSettings]] = {}
_discovered = False
_discovering = threading.RLock()  # a thread never sees the models half imported


def register_environment(model: type[Environment]) -> type[Environment]:
    """Class decorator: compose an integration's variables into `Settings`. Refuses a variable
    outside the model's `prefixes` or one another model (or the core) already reads."""
    key = f"{model.__module__}.{model.__qualname__}"
    if not model.prefixes or any(p.startswith(CORE_PREFIXES) for p in model.prefixes):
        raise TypeError(f"{key}: declare `prefixes` of its own (not {CORE_PREFIXES})")
    taken = set(Settings.own_variables()).union(
        *(other.own_variables() for name, other in _environments.items() if name != key)
    )
    for variable in model.own_variables():
        if not variable.startswith(model.prefixes):
            raise TypeError(f"{key}: {variable} does not start with one of {model.prefixes}")
        if variable in taken:
            raise TypeError(f"{key}: {variable} is already read by another settings model")
    _environments[key] = model
    return model


def environments() -> tuple[type[EnvironmentSettings], ...]:
    """Every integration's model: the integration packages' `environment` modules (imported
    here on first use) and any other registered one."""
    global _discovered
    if not _discovered:
        with _discovering:
            if not _discovered:
                package = importlib.import_module(INTEGRATIONS_PACKAGE)
                for found in pkgutil.iter_modules(package.__path__):
                    module = f"{INTEGRATIONS_PACKAGE}.{found.name}.environment"
                    if found.ispkg and importlib.util.find_spec(module) is not None:
                        importlib.import_module(module)
                _discovered = True
    return tuple(_environments.values())


def shipped_environments() -> tuple[type[EnvironmentSettings], ...]:
    """The models of the integration packages of this distribution (not a test's)."""
    return tuple(m for m in environments() if m.__module__.startswith(INTEGRATIONS_PACKAGE + "."))


def owned_prefixes() -> tuple[str, ...]:
    """Prefixes that belong to Anubis: an unknown variable with one of them is a typo."""
    return CORE_PREFIXES + tuple(p for model in environments() for p in model.prefixes)


# --- the cached instance --------------------------------------------------------------------
_cache: tuple[tuple[Any, ...], Settings] | None = None


def get_settings() -> Settings:
    """The validated settings of this process (re-read when one of its variables changed, or
    an integration registered its model since)."""
    global _cache
    models = environments()
    key = (models, *(os.environ.get(name) for name in Settings.variables()))
    cached = _cache
    if cached is not None and cached[0] == key:
        return cached[1]
    settings = Settings.from_env()
    _register(settings)
    _cache = (key, settings)
    return settings


def validate_at_load() -> Settings:
    """`get_settings()` for the start of the definitions' load: on a bad setting, raise the
    `SettingsError` without the frames below, so the code location shows the problems first."""
    try:
        return get_settings()
    except SettingsError as exc:
        raise exc.with_traceback(None) from None


def reset_settings() -> None:
    """Forget the cached settings (tests; the next `get_settings()` reads the environment)."""
    global _cache
    _cache = None


def _register(settings: Settings) -> None:
    """Hand every secret value to the redaction registry, so it is redacted by value."""
    from anubis_dagster.core.redaction import register_secrets

    register_secrets(settings.secret_values(), source="settings")


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Variables with an Anubis prefix that no setting reads: almost always a typo. Each entry
    says which known variable it probably meant."""
    env = os.environ if environ is None else environ
    known = Settings.variables()
    owned = owned_prefixes()
    found = []
    for name in sorted(env):
        if not name.startswith(owned) or name.startswith(TEST_ONLY_PREFIXES):
            continue
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        found.append(f"{name}: no such setting{hint}")
    return found


def markdown_table() -> str:
    """The README's table of variables, generated from the composed model so it cannot drift:
    the core's, then those of each integration package shipped (a model registered from
    elsewhere, a test's, is validated and checked but not documented here)."""
    lines = ["| variable | default | meaning |", "|---|---|---|", *Settings.table_rows()]
    for model in shipped_environments():
        lines += model.table_rows()
    return "\n".join(lines)


# --- the environment, for the few places that must touch it -----------------------------------
def register_environment_secrets() -> None:
    """Register the secret values of the whole environment this process started with, for
    redaction by value, including variables the model does not own (`DAGSTER_PG_PASSWORD`)."""
    from anubis_dagster.core.redaction import register_secrets, secret_values_from

    register_secrets(secret_values_from(os.environ))


def export_dagster_home(path: str) -> None:
    """Point Dagster (which reads `DAGSTER_HOME` itself) at `path` for this process."""
    os.environ["DAGSTER_HOME"] = path
