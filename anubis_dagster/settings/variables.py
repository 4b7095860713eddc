"""The core's environment variables (`ANUBIS_…`), one field each with its default and meaning,
grouped as the README's configuration table: the list a reader looks up. How they are checked
together, composed with the integrations' and cached is `composed.py`'s."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import SecretStr

from anubis_dagster.settings.model import EnvironmentModel, seconds_setting, setting


class CoreVariables(EnvironmentModel):
    """The core's variables; `Settings` adds their checks and the integrations' models."""

    password_urls: ClassVar[frozenset[str]] = frozenset(
        {
            "ANUBIS_DATABASE_URL",
            "ANUBIS_ORDERS_DATABASE_URL",
            "ANUBIS_LEGACY_KROTON_DATABASE_URL",
        }
    )

    # --- storage ------------------------------------------------------------------------------
    anubis_home: str = setting(".anubis", "local data of the embedded default", group="storage")
    anubis_database_url: SecretStr | None = setting(
        None,
        "app DB (`postgresql://…` in production); its password is a secret",
        group="storage",
        shown_default="`sqlite:///$ANUBIS_HOME/anubis.db`",
    )
    anubis_orders_database_url: SecretStr | None = setting(
        None,
        "database holding the paid orders (the marketplace's); its password is a secret",
        group="storage",
        shown_default="`sqlite:///$ANUBIS_HOME/orders.db`",
    )
    anubis_orders_table: str = setting(
        "orders", "table or view of paid orders (must exist; see the contract)", group="storage"
    )
    anubis_integrations_file: str | None = setting(
        None,
        "integrations, routing filters, per-origin and per-integration settings",
        group="storage",
        shown_default="`anubis_dagster/config/integrations.yaml`",
    )
    dagster_home: str | None = setting(
        None,
        "Dagster instance (copy of `dagster.yaml`; production: `deploy/postgres/dagster.yaml`)",
        group="storage",
        shown_default="`$ANUBIS_HOME/dagster_home`",
    )

    anubis_code_server_host: str | None = setting(
        None,
        "host of the gRPC code server (read by `deploy/postgres/workspace.yaml`)",
        group="storage",
    )
    anubis_code_server_port: int | None = setting(
        None, "port of the gRPC code server", group="storage", ge=1, le=65535
    )

    # --- intake -------------------------------------------------------------------------------
    anubis_intake_settle_seconds: float = setting(
        5.0,
        "orders younger than this wait for the next tick",
        group="intake",
        ge=0,
        allow_inf_nan=False,
    )
    anubis_intake_batch_size: int = setting(
        1000, "orders per intake batch (a run of `anubis run`)", group="intake", ge=1, le=100_000
    )
    anubis_intake_max_runs_per_tick: int = setting(
        5, "batches in the sensor's one intake run", group="intake", ge=1, le=1000
    )

    # --- delivery -----------------------------------------------------------------------------
    anubis_retry_schedule: str = setting(
        "1m,5m,30m,2h,6h,12h,24h",
        "waits between scheduled retries, then dead letter (an integration's "
        "`settings.retry_schedule` overrides it)",
        group="delivery",
    )
    anubis_lease_seconds: float = seconds_setting(
        600.0, "how long a run's claim on a subscription lasts if the run dies", group="delivery"
    )
    anubis_first_check_seconds: float = seconds_setting(
        120.0, "first status check after registering", group="delivery"
    )
    anubis_check_min_seconds: float = seconds_setting(
        600.0,
        "shortest wait between status checks (a quarter of the age, bounded)",
        group="delivery",
    )
    anubis_check_max_seconds: float = seconds_setting(
        86400.0, "longest wait between status checks", group="delivery"
    )
    anubis_op_retry_delay_seconds: float = setting(
        10.0,
        "Dagster op retry delay (unexpected exceptions)",
        group="delivery",
        ge=0,
        allow_inf_nan=False,
    )
    # issue 21: the circuit breaker of each partner API (`core/breaker.py`)
    anubis_breaker_failures: int = setting(
        12,
        "partner-caused failed calls in a row (5xx, timeouts, lost or unreadable answers) "
        "that open a partner API's circuit breaker",
        group="delivery",
        ge=2,
        le=1000,
    )
    anubis_breaker_students: int = setting(
        3,
        "different students those failures must be about",
        group="delivery",
        ge=2,
        le=1000,
    )
    anubis_breaker_window_seconds: float = seconds_setting(
        3600.0, "the failures must fall within this long", group="delivery"
    )
    anubis_breaker_probe_seconds: float = seconds_setting(
        60.0, "first probe of an open breaker after this long (then doubling)", group="delivery"
    )
    anubis_breaker_max_probe_seconds: float = seconds_setting(
        3600.0, "longest wait between probes of an open breaker", group="delivery"
    )

    # --- alerts and operations ----------------------------------------------------------------
    anubis_slack_webhook_url: SecretStr | None = setting(
        None,
        "Slack-compatible incoming webhook for alerts (a secret)",
        group="alerts",
        shown_default="unset (log only)",
    )
    anubis_ui_url: str = setting(
        "http://localhost:3000", "base of the run links in alerts", group="alerts"
    )
    anubis_quota_alert_seconds: float = seconds_setting(
        120.0, "quota wait in one run that raises a quota-saturated alert", group="alerts"
    )
    anubis_run_summaries: bool = setting(
        False,
        "post an ℹ️ summary after every delivery run (routine; the daily digest covers it)",
        group="alerts",
        shown_default="`false`",
    )
    anubis_digest_hour: str = setting(
        "8",
        "hour (0-23, America/Sao_Paulo) of the daily digest per integration; `off` for none",
        group="alerts",
    )
    # issue 21: the order-shape drift alarm (core/drift.py)
    anubis_drift_min_share: float = setting(
        0.2,
        "share of an intake chunk's orders invalid (or unrouted) for one reason that alerts "
        "(order shape changed?), once per reason per day",
        group="alerts",
        gt=0,
        le=1,
        allow_inf_nan=False,
    )
    anubis_drift_min_orders: int = setting(
        20, "fewest orders in a chunk for the drift alarm to judge it", group="alerts", ge=1
    )
    anubis_console_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = setting(
        "WARNING", "console log level of `anubis run`", group="alerts"
    )
    anubis_run_retention_days: int = setting(
        90, "Dagster runs older than this are deleted weekly", group="alerts", ge=1
    )
    anubis_pii_retention_days: int = setting(
        365,
        "personal data of finished subscriptions older than this is anonymised (LGPD)",
        group="alerts",
        ge=1,
    )
    # --- issue 22: retention of every place personal data lands, data-subject requests ---
    anubis_pii_open_retention_days: int = setting(
        730,
        "a subscription still open (e.g. Estácio `registered`) with no activity for this long "
        "is anonymised and closed as `expired`; at least `ANUBIS_PII_RETENTION_DAYS`",
        group="alerts",
        ge=1,
    )
    anubis_log_retention_days: int = setting(
        30,
        "compute logs (run output files) and `student_lookup`/privacy runs older than this are "
        "deleted by `retention_job`",
        group="alerts",
        ge=1,
    )
    anubis_privacy_key: SecretStr | None = setting(
        None,
        "key of the keyed hash (HMAC-SHA256) of a CPF in the privacy audit rows; unset: the "
        "audit rows hold no hash at all",
        group="alerts",
        shown_default="unset (no hash)",
    )
    anubis_privacy_export_dir: str | None = setting(
        None,
        "directory where the `privacy_export` job writes its files (mode 0600)",
        group="alerts",
        shown_default="`$ANUBIS_HOME/privacy_exports`",
    )

    # --- going live (issue 20): where the legacy import reads; never typed at launch -------------
    anubis_legacy_kroton_database_url: SecretStr | None = setting(
        None,
        "Kroton's legacy service database (`subscriptions`, `follow_ups`) read by `anubis legacy "
        "import` and the `legacy_import` job; its password is a secret",
        group="storage",
    )
    anubis_legacy_kroton_columns: str | None = setting(
        None,
        "legacy Kroton table/column names that differ from seed 001, `NAME=COLUMN,…` (e.g. "
        "`sent_at=synced_at`; docs/cutover.md)",
        group="storage",
        shown_default="seed 001's names",
    )
    anubis_legacy_estacio_csv: str | None = setting(
        None,
        "the Estácio legacy export (CSV, docs/cutover.md) the `legacy_import` job reads",
        group="storage",
    )

    # --- events out (issue 25): the outbox published to Kafka ----------------------------------
    anubis_events_enabled: bool = setting(
        False,
        "publish the event outbox to Kafka (off: the outbox is kept, `anubis events tail`)",
        group="events",
    )
    anubis_kafka_bootstrap_servers: str | None = setting(
        None, "Kafka brokers, `host:port,…` (required when events are on)", group="events"
    )
    anubis_kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        setting("PLAINTEXT", "librdkafka `security.protocol`", group="events")
    )
    anubis_kafka_sasl_mechanism: str | None = setting(
        None, "librdkafka `sasl.mechanism` (`PLAIN`, `SCRAM-SHA-512`…)", group="events"
    )
    anubis_kafka_sasl_username: str | None = setting(None, "SASL user", group="events")
    anubis_kafka_sasl_password: SecretStr | None = setting(None, "SASL password", group="events")
    anubis_events_topic_template: str = setting(
        "anubis.event.{type}",
        "topic of each event type (`{type}`: `subscription.sent`…); without `{type}` one topic",
        group="events",
    )
    anubis_events_batch_size: int = setting(
        1000, "events per publisher batch", group="events", ge=1, le=100_000
    )
    anubis_events_max_batches_per_tick: int = setting(
        20, "batches one publisher tick drains at most", group="events", ge=1, le=1000
    )
    anubis_events_delivery_timeout_seconds: float = seconds_setting(
        20.0, "how long a batch waits for the brokers' acknowledgements", group="events"
    )
    anubis_events_lag_alert_seconds: float = seconds_setting(
        900.0, "alert when the oldest unpublished event is older than this", group="events"
    )
    anubis_events_retention_days: int = setting(
        7,
        "published events (all events when publishing is off) are pruned after this",
        group="events",
        ge=1,
    )

    # --- partner answers (issue 22) -----------------------------------------------------------
    anubis_partner_max_body_bytes: int = setting(
        1_000_000,
        "largest partner answer, in bytes after decompression; a longer one is cut and unreadable",
        group="delivery",
        ge=1024,
        le=100_000_000,
    )
    anubis_partner_deadline_seconds: float = seconds_setting(
        60.0, "longest life of one partner request, answer included", group="delivery"
    )
    anubis_names_csv: str | None = setting(
        None,
        "the IBGE names CSV the `import_names_job` may read (besides the bundled one)",
        group="storage",
        shown_default="the bundled file",
    )
