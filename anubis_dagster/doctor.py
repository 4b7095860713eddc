"""`anubis doctor`: the effective configuration and every problem with it, before a run finds it.

Why: a mistyped variable, a quota in the wrong shape, an integrations file key the adapter does
not know, a database that is down or not migrated, an orders table that does not exist, or a
partner's credentials missing for an enabled integration each used to surface hours later inside
a run. The doctor looks at all of them at once, prints what it found (secrets only as `set`,
passwords hidden) and exits 1 when there is any problem. It only reads: it never creates a
database file, a table or a migration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anubis_dagster.config.integrations import (
    DEFAULT_FILE,
    ConfigError,
    IntegrationsFile,
    load_integrations,
    settings_problems,
)
from anubis_dagster.settings import (
    Settings,
    SettingsError,
    get_settings,
    hide_password,
    unknown_variables,
)


@dataclass
class Report:
    """What the doctor found: lines to show and the problems (each names its setting)."""

    settings: list[tuple[str, str, str]] = field(default_factory=list)
    integrations: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: worth a look, not wrong (exit code unchanged): e.g. no go-live point (issue 20)
    warnings: list[str] = field(default_factory=list)

    def render(self) -> str:
        width = max((len(name) for name, _, _ in self.settings), default=10)
        lines = ["Settings (environment):"]
        lines += [f"  {name:<{width}}  {value}  [{src}]" for name, value, src in self.settings]
        lines += ["", "Integrations:", *(f"  {line}" for line in self.integrations)]
        lines += ["", "Checks:", *(f"  {line}" for line in self.checks)]
        if self.warnings:
            lines += ["", f"{len(self.warnings)} warning(s):"]
            lines += [f"  - {warning}" for warning in self.warnings]
        if self.problems:
            lines += ["", f"{len(self.problems)} problem(s):"]
            lines += [f"  - {problem}" for problem in self.problems]
        else:
            lines += ["", "no problems found"]
        return "\n".join(lines)


def diagnose() -> Report:
    """Every check, each one's failure recorded as a problem instead of raised."""
    report = Report()
    settings: Settings | None
    try:
        settings = get_settings()
        report.settings = list(settings.effective())
        report.problems += settings.production_problems()
        report.checks.append(_retention_line(settings))
    except SettingsError as exc:
        settings = None
        report.problems += exc.problems
        report.settings = [("(not shown)", "the settings are invalid; see the problems", "")]
    report.problems += unknown_variables()
    config = _integrations(report, settings)
    if settings is not None:
        _app_database(report, settings)
        _orders_source(report, settings)
        if config is not None:
            _credentials(report, config)
        _go_live_points(report)
    return report


def _go_live_points(report: Report) -> None:
    """Enabled integrations without a go-live point while the orders source holds orders older
    than a day: their first pass would send the whole history (`legacy/go_live.py`)."""
    from anubis_dagster.db.session import default_database_url, session_scope
    from anubis_dagster.intake.orders_source import OrdersSource
    from anubis_dagster.legacy.go_live import missing_points

    try:
        with session_scope(default_database_url()) as session:
            report.warnings += missing_points(session, OrdersSource())
    except Exception as exc:  # a check must not stop the others
        report.warnings.append(f"go-live points not checked: {_first_line(exc)}")


def app_database_report() -> Report:
    """Only the app DB check (reachable, latest migration): the platform health asset runs it
    every few minutes, and `diagnose` for everything else."""
    report = Report()
    try:
        settings = get_settings()
    except SettingsError as exc:
        report.problems += exc.problems
        return report
    _app_database(report, settings)
    return report


def _integrations(report: Report, settings: Settings | None) -> IntegrationsFile | None:
    path = Path(settings.anubis_integrations_file or DEFAULT_FILE) if settings else DEFAULT_FILE
    try:
        config = load_integrations(path)
    except (ConfigError, SettingsError) as exc:
        report.problems += _lines(str(exc))
        return None
    report.integrations.append(f"file: {path}")
    for item in config.integrations:
        state = "enabled" if item.enabled else "disabled"
        shown = ", ".join(f"{k}={_short(v)}" for k, v in item.settings.items()) or "no settings"
        report.integrations.append(
            f"{item.key} (type {item.type}, {state}, every {item.interval} min): {shown}"
        )
    report.problems += settings_problems(config, production=True)
    return config


def _app_database(report: Report, settings: Settings) -> None:
    """Reachable and at the latest migration (without creating or migrating anything)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from anubis_dagster.db.migrate import alembic_config
    from anubis_dagster.db.session import default_database_url, get_engine

    variable = "ANUBIS_DATABASE_URL"
    url = default_database_url()
    shown = hide_password(url)
    missing = _missing_sqlite_file(url)
    if missing:
        report.problems.append(
            f"{variable}: the SQLite file {missing} does not exist yet (`anubis db upgrade` "
            "creates and migrates it)"
        )
        return
    try:
        with get_engine(url).connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except Exception as exc:  # unreachable server, bad credentials, missing driver…
        report.problems.append(f"{variable}: cannot connect to {shown}: {_first_line(exc)}")
        return
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    if current != head:
        report.problems.append(
            f"{variable}: the app DB {shown} is at migration {current or 'none'}, not {head} "
            "(run `anubis db upgrade`)"
        )
        return
    report.checks.append(f"app DB {shown}: reachable, at migration {head}")


def _orders_source(report: Report, settings: Settings) -> None:
    from anubis_dagster.intake.orders_source import check_orders_source, default_orders_url

    table = settings.anubis_orders_table
    problems = check_orders_source(settings.orders_database_url(), table)
    report.problems += problems
    if not problems:
        report.checks.append(f"orders source {hide_password(default_orders_url())}: table {table}")


def _credentials(report: Report, config: IntegrationsFile) -> None:
    """An enabled integration whose partner variables are unset cannot run: say so now."""
    from anubis_dagster.integrations.base import UnknownIntegrationType, adapter_class

    for item in config.integrations:
        if not item.enabled:
            continue
        try:
            resources = adapter_class(item.type).resources()
        except UnknownIntegrationType:
            continue  # reported with the integrations file
        except ValueError as exc:  # a resource refused a value: already a settings problem
            report.problems.append(f"integration {item.key!r}: {exc}")
            continue
        missing = [
            name
            for resource in resources.values()
            for name in getattr(resource, "missing_settings", list)()
        ]
        if missing:
            report.problems.append(
                f"integration {item.key!r} is enabled but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set"
            )
        else:
            report.checks.append(f"integration {item.key}: credentials set")


def _retention_line(settings: Settings) -> str:
    """Issue 22: how long personal data lives (the ages themselves are validated with the
    settings: whole days, and the open subscriptions' age not below the finished ones')."""
    audit = "keyed hash" if settings.anubis_privacy_key else "no hash (ANUBIS_PRIVACY_KEY unset)"
    return (
        f"retention: personal data {settings.anubis_pii_retention_days} days (idle open "
        f"subscriptions {settings.anubis_pii_open_retention_days}), lookup/privacy runs and "
        f"compute logs {settings.anubis_log_retention_days}, Dagster runs "
        f"{settings.anubis_run_retention_days}; privacy audit: {audit}"
    )


def _missing_sqlite_file(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:"):
        return None if Path(database).exists() else database
    return None


def _first_line(exc: BaseException) -> str:
    from anubis_dagster.core.masking import mask_text

    text = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""]
    return f"{type(exc).__name__}: {mask_text(text[0])[:200]}"


def _lines(message: str) -> list[str]:
    """A multi-line error (`invalid …:\\n  - a\\n  - b`) as its problem lines."""
    head, *rest = message.splitlines()
    items = [line.strip().removeprefix("- ") for line in rest if line.strip()]
    return items or [head]


def _short(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(str(k) for k in value) + "}"
    return repr(value)
