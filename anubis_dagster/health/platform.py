"""What every integration depends on: the app database, the IBGE names table and the
configuration (seed 001's health list), checked the way `anubis doctor` checks them."""

from __future__ import annotations

from sqlalchemy import func, select

from anubis_dagster.clients.probes import Level
from anubis_dagster.core.masking import mask_text
from anubis_dagster.db.models import Name
from anubis_dagster.db.session import session_scope
from anubis_dagster.health.alerting import CheckOutcome

PLATFORM = "platform"

#: check name → description (the UI's; stable names, the docs and the browser test use them)
DESCRIPTIONS = {
    "app_database": "platform (every integration): the app database (ANUBIS_DATABASE_URL) is "
    "reachable and at the latest migration, as `anubis doctor` checks it.",
    "names_table": "platform (Kroton's gender fix): the IBGE first-name census table `names` "
    "is not empty; without it every Kroton student is sent with gender NI "
    "(`anubis names import`, or the import_names_job).",
    "configuration": "platform (every integration): the configuration is complete, with no "
    "problem found by `anubis doctor` (settings, unknown variables, integrations file, app DB, "
    "orders table, credentials of enabled integrations).",
}


def check_app_database() -> CheckOutcome:
    from anubis_dagster.doctor import app_database_report

    report = app_database_report()
    if report.problems:
        found = "; ".join(report.problems)
        return _outcome("app_database", Level.ERROR, found, found)
    found = "; ".join(report.checks)
    return _outcome("app_database", Level.OK, found, found)


def check_names_table(db_url: str) -> CheckOutcome:
    try:
        with session_scope(db_url) as session:
            count = int(session.scalar(select(func.count()).select_from(Name)) or 0)
    except Exception as exc:  # the DB is down: app_database says why
        reason = f"cannot read the names table ({type(exc).__name__})"
        return _outcome("names_table", Level.ERROR, reason, reason)
    if count == 0:
        return _outcome(
            "names_table",
            Level.WARN,
            "0 names",
            "the names table is empty: Kroton students get gender NI until "
            "`anubis names import` (or the import_names_job) fills it",
        )
    return _outcome("names_table", Level.OK, f"{count} names", f"{count} names in the census")


def check_configuration() -> CheckOutcome:
    from anubis_dagster.doctor import diagnose

    report = diagnose()
    if report.problems:
        shown = "; ".join(report.problems[:5])
        more = f" (and {len(report.problems) - 5} more)" if len(report.problems) > 5 else ""
        measured = f"{len(report.problems)} problem(s)"
        return _outcome("configuration", Level.ERROR, measured, f"{shown}{more}")
    return _outcome("configuration", Level.OK, "0 problems", "anubis doctor found no problem")


def _outcome(name: str, level: Level, measured: str, summary: str) -> CheckOutcome:
    thresholds = {
        "app_database": "reachable and at the latest migration",
        "names_table": "at least one name (WARN when empty)",
        "configuration": "no problem found by anubis doctor",
    }
    return CheckOutcome(
        PLATFORM, name, level, mask_text(measured)[:300], thresholds[name], mask_text(summary)
    )
