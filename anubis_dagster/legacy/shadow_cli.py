"""`anubis shadow on|off|report`: the shadow run from a terminal, with the same rules and
alerts as the `shadow_mode` and `shadow_report` jobs (`legacy/shadow_jobs.py`)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from anubis_dagster.db.session import default_database_url, session_scope


def _cmd_mode(args: argparse.Namespace) -> int:
    from anubis_dagster.alerts.webhook import send_alert
    from anubis_dagster.legacy.shadow import UnknownIntegration, set_shadow, shadow_alert
    from anubis_dagster.resources import prepare_database

    url = default_database_url()
    prepare_database(url)
    try:
        with session_scope(url) as session:
            change = set_shadow(session, args.key, args.shadow, dry_run=args.dry_run)
    except UnknownIntegration as exc:
        print(f"anubis: {exc.args[0]}", file=sys.stderr)
        return 1
    if change.changed and not change.dry_run:
        send_alert(shadow_alert(change))
    print(("dry run: " if change.dry_run else "") + change.describe())
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from anubis_dagster.legacy.shadow import UnknownIntegration
    from anubis_dagster.legacy.shadow_report import PeriodError, parse_period
    from anubis_dagster.legacy.shadow_source import LegacySourceMissing, build_report
    from anubis_dagster.resources import prepare_database

    url = default_database_url()
    prepare_database(url)
    try:
        since, until = parse_period(args.since, args.until, datetime.now(UTC))
        _known(url, args.key)
        report = build_report(url, args.key, since, until)
    except (PeriodError, LegacySourceMissing, UnknownIntegration) as exc:
        print(f"anubis: {exc.args[0]}", file=sys.stderr)
        return 1
    print(report.to_markdown(), end="")
    return 0


def _known(url: str, key: str) -> None:
    from sqlalchemy import select

    from anubis_dagster.db.models import Integration
    from anubis_dagster.legacy.shadow import UnknownIntegration

    with session_scope(url) as session:
        if session.scalar(select(Integration.id).where(Integration.key == key)) is None:
            raise UnknownIntegration(f"no integration {key!r} (see the integrations file)")


def add_shadow_parser(sub: Any) -> None:
    """`anubis shadow …` under the main parser's subcommands."""
    shadow = sub.add_parser(
        "shadow", help="shadow run of one integration: send nothing, compare with the legacy"
    ).add_subparsers(dest="shadow_command", required=True)
    on = shadow.add_parser("on", help="start the shadow run: nothing is written at the partner")
    off = shadow.add_parser("off", help="go live: students intaken from now on are sent")
    for parser, value in ((on, True), (off, False)):
        parser.add_argument("key", help="the integration's key (kroton, estacio, …)")
        parser.add_argument("--dry-run", action="store_true", help="only say what would change")
        parser.set_defaults(func=_cmd_mode, shadow=value)
    report = shadow.add_parser(
        "report", help="compare what Anubis would have sent with the legacy's records"
    )
    report.add_argument("key", help="the integration's key")
    report.add_argument("--since", help="start, ISO 8601 (default: a day before --until)")
    report.add_argument("--until", help="end, ISO 8601 (default: now)")
    report.set_defaults(func=_cmd_report)
