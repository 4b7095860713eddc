# Over the house's ~400 lines for now: the core's typed settings model, its reading and checks;
# each integration's variables live in its own package (`integrations/<name>/environment.py`).
"""Every environment variable Anubis reads, in one typed model, validated once at load.

Why one model: a mistyped quota, a negative timeout or a database URL with the wrong scheme
used to pass silently and fail hours later inside a run. `get_settings()` reads the whole
environment into `Settings` and raises `SettingsError` listing every problem, each naming its
variable and what is wrong, before any job, sensor or command starts. The definitions load calls
it, so a bad value stops the code location with that message; the `anubis` CLI prints it and
exits 1; `anubis doctor` prints it with the effective configuration.

Field names are the variables' names in lower case (`ANUBIS_LEASE_SECONDS` →
`anubis_lease_seconds`), so a search for a variable finds its field. An empty variable counts as
unset (shells and Compose files often export empty values). Secret values are `SecretStr`
(never in a `repr`, the doctor prints `set`) and are handed to the redaction registry
(`core.redaction.register_secrets`) whenever they are loaded, so they are redacted by value.

The core's variables are the fields of `Settings`; each integration package owns its own in an
`EnvironmentSettings` model (`integrations/<name>/environment.py`, found by convention, or any
module that applies `@register_environment`, as the test IES does). `Settings` composes them:
`Settings.variables()`, validation, `anubis doctor`, the typo check (`owned_prefixes()`) and the
README table (`markdown_table()`) cover every registered model; an integration reads its values
with `settings.environment(Model)` or, by variable name, `settings.value("API_…")`.

Settings are read when used (`get_settings()` in the function that needs them), never into a
module constant at import.

The model is cached by the values of its variables: tests that `monkeypatch.setenv` get a fresh
model on the next `get_settings()`, and a process whose environment does not change validates
once. `reset_settings()` drops the cache.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import math
import os
import pkgutil
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from anubis_dagster.core.breaker import BreakerRule

#: the core's environment prefix; each integration's model adds its own (`owned_prefixes()`)
CORE_PREFIXES = ("ANUBIS_",)
#: where integration packages live: `<package>.<name>.environment` is imported by convention
INTEGRATIONS_PACKAGE = "anubis_dagster.integrations"
#: variables of the test suite, the benchmarks and the deploy tests, not of the application
TEST_ONLY_PREFIXES = ("ANUBIS_TEST_", "ANUBIS_BENCH_", "ANUBIS_DAGSTER_CHART")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class SettingsError(ValueError):
    """The environment holds invalid settings. The message lists every problem, one per line,
    each starting with the variable's name; it never carries a secret's value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid configuration:\n" + "\n".join(f"  - {problem}" for problem in problems)
        )


def _field(
    default: Any,
    meaning: str,
    *,
    group: str,
    shown_default: str | None = None,
    **constraints: Any,
) -> Any:
    """A settings field with what the README table needs: its group and shown default."""
    extra: dict[str, Any] = {"group": group, "shown_default": shown_default}
    return Field(default=default, description=meaning, json_schema_extra=extra, **constraints)


def _seconds(default: float, meaning: str, *, group: str, minimum: float = 0.0) -> Any:
    """A duration in seconds: a finite number, strictly above `minimum` (default: > 0)."""
    return _field(default, meaning, group=group, gt=minimum, allow_inf_nan=False)


#: the field helpers, for the integrations' environment models
setting = _field
seconds_setting = _seconds


class EnvironmentModel(BaseModel):
    """Variables read from the environment, one field each, named as the variable in lower
    case: the core's `Settings` and each integration's `EnvironmentSettings`."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    #: variables holding a database URL: the doctor shows them with the password hidden
    password_urls: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def own_variables(cls) -> tuple[str, ...]:
        """This model's variables, in declaration order."""
        return tuple(name.upper() for name in cls.model_fields)

    @classmethod
    def own_secret_variables(cls) -> frozenset[str]:
        return frozenset(
            name.upper()
            for name, info in cls.model_fields.items()
            if "SecretStr" in str(info.annotation)
        )

    @classmethod
    def read(cls, env: Mapping[str, str]) -> tuple[Self | None, list[str]]:
        """The model from `env` (empty = unset), or None and every problem found."""
        values = {
            name.lower(): env[name] for name in cls.own_variables() if env.get(name, "").strip()
        }
        try:
            return cls.model_validate({k: v.strip() for k, v in values.items()}), []
        except ValidationError as exc:
            return None, _problems(cls, exc, values)

    def own_secret_values(self) -> list[str]:
        return [
            field.get_secret_value()
            for name in sorted(self.own_secret_variables())
            if (field := getattr(self, name.lower())) is not None
        ]

    def own_effective(self) -> Iterator[tuple[str, str, str]]:
        """(variable, shown value, source): secrets as `set`, URL passwords hidden."""
        for name in type(self).model_fields:
            variable = name.upper()
            value = getattr(self, name)
            source = "env" if name in self.model_fields_set else "default"
            if value is None:
                shown = "unset"
            elif variable in self.password_urls:
                shown = hide_password(value.get_secret_value())
            elif isinstance(value, SecretStr):
                shown = "set"
            else:
                shown = str(value)
            yield variable, shown, source

    @classmethod
    def table_rows(cls) -> list[str]:
        """This model's rows of the README's configuration table."""
        lines = []
        secrets = cls.own_secret_variables()
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            shown = extra.get("shown_default")
            if shown is None:
                shown = "—" if info.default is None else f"`{info.default}`"
            meaning = info.description or ""
            if name.upper() in secrets and "secret" not in meaning:
                meaning += " (secret)"
            lines.append(f"| `{name.upper()}` | {shown} | {meaning} |")
        return lines


class EnvironmentSettings(EnvironmentModel):
    """The environment variables of one integration package, declared in its
    `environment.py` and decorated with `@register_environment`; `Settings` composes them.

    Every variable starts with one of `prefixes` (so a mistyped one is reported). Checked by
    name for every field: one ending `_rate_limit` is a quota `REQUESTS/SECONDS`, one holding
    `_url` an http(s) URL (a `PartnerApiResource` reads `<settings_prefix>_rate_limit` and
    `<settings_prefix>_timeout_seconds`, and its `credential(...)` variables, from here)."""

    #: the prefixes of its variables, e.g. `("API_ACME_",)`
    prefixes: ClassVar[tuple[str, ...]] = ()

    @field_validator("*")
    @classmethod
    def _by_name(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name or ""
        if isinstance(value, str) and name.endswith("_rate_limit"):
            check_quota(value)
        elif isinstance(value, str) and "_url" in name:
            check_http_url(value)
        return value


Environment = TypeVar("Environment", bound=EnvironmentSettings)


class Settings(EnvironmentModel):
    """The application's environment. See the module docstring for the rules."""

    password_urls: ClassVar[frozenset[str]] = frozenset(
        {
            "ANUBIS_DATABASE_URL",
            "ANUBIS_ORDERS_DATABASE_URL",
            "ANUBIS_LEGACY_KROTON_DATABASE_URL",
        }
    )
    #: the integrations' models, as read with this one (`from_env`)
    _parts: dict[type[EnvironmentSettings], EnvironmentSettings] = PrivateAttr(default_factory=dict)

    # --- storage ------------------------------------------------------------------------------
    anubis_home: str = _field(".anubis", "local data of the embedded default", group="storage")
    anubis_database_url: SecretStr | None = _field(
        None,
        "app DB (`postgresql://…` in production); its password is a secret",
        group="storage",
        shown_default="`sqlite:///$ANUBIS_HOME/anubis.db`",
    )
    anubis_orders_database_url: SecretStr | None = _field(
        None,
        "database holding the paid orders (the marketplace's); its password is a secret",
        group="storage",
        shown_default="`sqlite:///$ANUBIS_HOME/orders.db`",
    )
    anubis_orders_table: str = _field(
        "orders", "table or view of paid orders (must exist; see the contract)", group="storage"
    )
    anubis_integrations_file: str | None = _field(
        None,
        "integrations, routing filters, per-origin and per-integration settings",
        group="storage",
        shown_default="`anubis_dagster/config/integrations.yaml`",
    )
    dagster_home: str | None = _field(
        None,
        "Dagster instance (copy of `dagster.yaml`; production: `deploy/postgres/dagster.yaml`)",
        group="storage",
        shown_default="`$ANUBIS_HOME/dagster_home`",
    )

    anubis_code_server_host: str | None = _field(
        None,
        "host of the gRPC code server (read by `deploy/postgres/workspace.yaml`)",
        group="storage",
    )
    anubis_code_server_port: int | None = _field(
        None, "port of the gRPC code server", group="storage", ge=1, le=65535
    )

    # --- intake -------------------------------------------------------------------------------
    anubis_intake_settle_seconds: float = _field(
        5.0,
        "orders younger than this wait for the next tick",
        group="intake",
        ge=0,
        allow_inf_nan=False,
    )
    anubis_intake_batch_size: int = _field(
        1000, "orders per intake batch (a run of `anubis run`)", group="intake", ge=1, le=100_000
    )
    anubis_intake_max_runs_per_tick: int = _field(
        5, "batches in the sensor's one intake run", group="intake", ge=1, le=1000
    )

    # --- delivery -----------------------------------------------------------------------------
    anubis_retry_schedule: str = _field(
        "1m,5m,30m,2h,6h,12h,24h",
        "waits between scheduled retries, then dead letter (an integration's "
        "`settings.retry_schedule` overrides it)",
        group="delivery",
    )
    anubis_lease_seconds: float = _seconds(
        600.0, "how long a run's claim on a subscription lasts if the run dies", group="delivery"
    )
    anubis_first_check_seconds: float = _seconds(
        120.0, "first status check after registering", group="delivery"
    )
    anubis_check_min_seconds: float = _seconds(
        600.0,
        "shortest wait between status checks (a quarter of the age, bounded)",
        group="delivery",
    )
    anubis_check_max_seconds: float = _seconds(
        86400.0, "longest wait between status checks", group="delivery"
    )
    anubis_op_retry_delay_seconds: float = _field(
        10.0,
        "Dagster op retry delay (unexpected exceptions)",
        group="delivery",
        ge=0,
        allow_inf_nan=False,
    )
    # issue 21: the circuit breaker of each partner API (`core/breaker.py`)
    anubis_breaker_failures: int = _field(
        12,
        "partner-caused failed calls in a row (5xx, timeouts, lost or unreadable answers) "
        "that open a partner API's circuit breaker",
        group="delivery",
        ge=2,
        le=1000,
    )
    anubis_breaker_students: int = _field(
        3,
        "different students those failures must be about",
        group="delivery",
        ge=2,
        le=1000,
    )
    anubis_breaker_window_seconds: float = _seconds(
        3600.0, "the failures must fall within this long", group="delivery"
    )
    anubis_breaker_probe_seconds: float = _seconds(
        60.0, "first probe of an open breaker after this long (then doubling)", group="delivery"
    )
    anubis_breaker_max_probe_seconds: float = _seconds(
        3600.0, "longest wait between probes of an open breaker", group="delivery"
    )

    # --- alerts and operations ----------------------------------------------------------------
    anubis_slack_webhook_url: SecretStr | None = _field(
        None,
        "Slack-compatible incoming webhook for alerts (a secret)",
        group="alerts",
        shown_default="unset (log only)",
    )
    anubis_ui_url: str = _field(
        "http://localhost:3000", "base of the run links in alerts", group="alerts"
    )
    anubis_quota_alert_seconds: float = _seconds(
        120.0, "quota wait in one run that raises a quota-saturated alert", group="alerts"
    )
    anubis_run_summaries: bool = _field(
        False,
        "post an ℹ️ summary after every delivery run (routine; the daily digest covers it)",
        group="alerts",
        shown_default="`false`",
    )
    anubis_digest_hour: str = _field(
        "8",
        "hour (0-23, America/Sao_Paulo) of the daily digest per integration; `off` for none",
        group="alerts",
    )
    # issue 21: the order-shape drift alarm (core/drift.py)
    anubis_drift_min_share: float = _field(
        0.2,
        "share of an intake chunk's orders invalid (or unrouted) for one reason that alerts "
        "(order shape changed?), once per reason per day",
        group="alerts",
        gt=0,
        le=1,
        allow_inf_nan=False,
    )
    anubis_drift_min_orders: int = _field(
        20, "fewest orders in a chunk for the drift alarm to judge it", group="alerts", ge=1
    )
    anubis_console_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = _field(
        "WARNING", "console log level of `anubis run`", group="alerts"
    )
    anubis_run_retention_days: int = _field(
        90, "Dagster runs older than this are deleted weekly", group="alerts", ge=1
    )
    anubis_pii_retention_days: int = _field(
        365,
        "personal data of finished subscriptions older than this is anonymised (LGPD)",
        group="alerts",
        ge=1,
    )
    # --- issue 22: retention of every place personal data lands, data-subject requests ---
    anubis_pii_open_retention_days: int = _field(
        730,
        "a subscription still open (e.g. Estácio `registered`) with no activity for this long "
        "is anonymised and closed as `expired`; at least `ANUBIS_PII_RETENTION_DAYS`",
        group="alerts",
        ge=1,
    )
    anubis_log_retention_days: int = _field(
        30,
        "compute logs (run output files) and `student_lookup`/privacy runs older than this are "
        "deleted by `retention_job`",
        group="alerts",
        ge=1,
    )
    anubis_privacy_key: SecretStr | None = _field(
        None,
        "key of the keyed hash (HMAC-SHA256) of a CPF in the privacy audit rows; unset: the "
        "audit rows hold no hash at all",
        group="alerts",
        shown_default="unset (no hash)",
    )
    anubis_privacy_export_dir: str | None = _field(
        None,
        "directory where the `privacy_export` job writes its files (mode 0600)",
        group="alerts",
        shown_default="`$ANUBIS_HOME/privacy_exports`",
    )

    # --- going live (issue 20): where the legacy import reads; never typed at launch -------------
    anubis_legacy_kroton_database_url: SecretStr | None = _field(
        None,
        "Kroton's legacy service database (`subscriptions`, `follow_ups`) read by `anubis legacy "
        "import` and the `legacy_import` job; its password is a secret",
        group="storage",
    )
    anubis_legacy_kroton_columns: str | None = _field(
        None,
        "legacy Kroton table/column names that differ from seed 001, `NAME=COLUMN,…` (e.g. "
        "`sent_at=synced_at`; docs/cutover.md)",
        group="storage",
        shown_default="seed 001's names",
    )
    anubis_legacy_estacio_csv: str | None = _field(
        None,
        "the Estácio legacy export (CSV, docs/cutover.md) the `legacy_import` job reads",
        group="storage",
    )

    # --- events out (issue 25): the outbox published to Kafka ----------------------------------
    anubis_events_enabled: bool = _field(
        False,
        "publish the event outbox to Kafka (off: the outbox is kept, `anubis events tail`)",
        group="events",
    )
    anubis_kafka_bootstrap_servers: str | None = _field(
        None, "Kafka brokers, `host:port,…` (required when events are on)", group="events"
    )
    anubis_kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        _field("PLAINTEXT", "librdkafka `security.protocol`", group="events")
    )
    anubis_kafka_sasl_mechanism: str | None = _field(
        None, "librdkafka `sasl.mechanism` (`PLAIN`, `SCRAM-SHA-512`…)", group="events"
    )
    anubis_kafka_sasl_username: str | None = _field(None, "SASL user", group="events")
    anubis_kafka_sasl_password: SecretStr | None = _field(None, "SASL password", group="events")
    anubis_events_topic_template: str = _field(
        "anubis.event.{type}",
        "topic of each event type (`{type}`: `subscription.sent`…); without `{type}` one topic",
        group="events",
    )
    anubis_events_batch_size: int = _field(
        1000, "events per publisher batch", group="events", ge=1, le=100_000
    )
    anubis_events_max_batches_per_tick: int = _field(
        20, "batches one publisher tick drains at most", group="events", ge=1, le=1000
    )
    anubis_events_delivery_timeout_seconds: float = _seconds(
        20.0, "how long a batch waits for the brokers' acknowledgements", group="events"
    )
    anubis_events_lag_alert_seconds: float = _seconds(
        900.0, "alert when the oldest unpublished event is older than this", group="events"
    )
    anubis_events_retention_days: int = _field(
        7,
        "published events (all events when publishing is off) are pruned after this",
        group="events",
        ge=1,
    )

    # --- partner answers (issue 22) -----------------------------------------------------------
    anubis_partner_max_body_bytes: int = _field(
        1_000_000,
        "largest partner answer, in bytes after decompression; a longer one is cut and unreadable",
        group="delivery",
        ge=1024,
        le=100_000_000,
    )
    anubis_partner_deadline_seconds: float = _seconds(
        60.0, "longest life of one partner request, answer included", group="delivery"
    )
    anubis_names_csv: str | None = _field(
        None,
        "the IBGE names CSV the `import_names_job` may read (besides the bundled one)",
        group="storage",
        shown_default="the bundled file",
    )

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


def _problems(
    model: type[EnvironmentModel], exc: ValidationError, values: Mapping[str, str]
) -> list[str]:
    """One line per error: `VARIABLE: what is wrong (got 'value')`; secrets never echoed."""
    secrets = model.own_secret_variables()
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        message = str(error["msg"]).removeprefix("Value error, ")
        if not loc:  # a check across fields names its variables itself
            problems.append(message)
            continue
        variable = loc[0].upper()
        raw = values.get(loc[0])
        shown = "" if raw is None or variable in secrets else f" (got {raw!r})"
        if error["type"] in _READABLE:
            message = _READABLE[error["type"]].format(**error.get("ctx", {}))
        if variable.endswith("_SECONDS") and error["type"] in _SECONDS_ERRORS:
            message = _seconds_message(model, loc[0])
        problems.append(f"{variable}: {message}{shown}")
    return problems


#: pydantic's wording for the common errors, in the words of a settings file
_READABLE = {
    "greater_than": "must be above {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "literal_error": "must be one of " + ", ".join(LOG_LEVELS),
    "bool_parsing": "must be true or false",
}


_SECONDS_ERRORS = frozenset(
    {"float_parsing", "finite_number", "greater_than", "greater_than_equal"}
)


def _seconds_message(model: type[EnvironmentModel], name: str) -> str:
    """A duration's error in one wording, whatever pydantic found wrong with it."""
    strictly_positive = any(
        getattr(rule, "gt", None) == 0 for rule in model.model_fields[name].metadata
    )
    if strictly_positive:
        return "must be a positive number of seconds"
    return "must be a number of seconds, 0 or more"


# --- value checks (also used by the per-integration settings models) -------------------------
def check_http_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s):// URL with a host")


def check_database_url(value: str) -> None:
    """A SQLAlchemy URL of a backend Anubis supports; messages never echo the password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise ValueError(
            "is not a database URL (expected postgresql://user:password@host/db or sqlite:///path)"
        ) from None
    backend = url.drivername.split("+", 1)[0]
    if backend not in DATABASE_SCHEMES:
        raise ValueError(f"unsupported database {backend!r} (use postgresql://… or sqlite:///…)")
    if backend != "sqlite" and not url.host:
        raise ValueError("a PostgreSQL URL needs a host (postgresql://user:password@host/db)")
    if backend != "sqlite" and not url.database:
        raise ValueError("a PostgreSQL URL needs a database name (…@host/db)")


def url_password(value: str | None) -> str | None:
    if not value:
        return None
    from sqlalchemy.engine import make_url

    try:
        return make_url(value).password
    except Exception:  # an invalid URL fails validation elsewhere; nothing to redact here
        return None


def hide_password(value: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(value).render_as_string(hide_password=True)
    except Exception:
        return "set (unparsable)"


def check_quota(value: str) -> None:
    from anubis_dagster.clients.quota import Quota

    try:
        Quota.parse(value, name="quota")
    except ValueError:
        raise ValueError(
            "must look like REQUESTS/SECONDS with both above 0 (e.g. 100/300)"
        ) from None


def check_retry_schedule(value: str, *, allow_zero: bool = True) -> None:
    """A schedule `parse_schedule` reads. A 0 delay (retry at once) loads, because the test
    suite relies on it, but `anubis doctor` refuses it (`allow_zero=False`): in production it
    spends a student's every attempt within one run during a short outage."""
    from anubis_dagster.core.retry_schedule import parse_schedule

    delays = parse_schedule(value)  # ValueError names the bad item
    if not allow_zero and any(delay.total_seconds() <= 0 for delay in delays):
        raise ValueError("every retry delay must be above 0 (e.g. 1m,5m,30m,2h)")
    if any(not math.isfinite(delay.total_seconds()) for delay in delays):
        raise ValueError("every retry delay must be finite")


def check_window(value: str | None, zone: str | None = None) -> None:
    from anubis_dagster.core.daily_window import DailyWindow

    try:
        DailyWindow.parse(value, name="window", zone=zone)
    except ValueError as exc:
        message = re.sub(r", got .*$", "", str(exc))
        raise ValueError(message.removeprefix("window ").removeprefix(": ")) from None


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
