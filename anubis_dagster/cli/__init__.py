"""The `anubis` command: operations that do not need the Dagster UI.

anubis db upgrade                 migrate the app DB and sync the integrations file
anubis orders load FILE           load JSON Lines orders into the configured orders source
anubis run                        one in-process pass of intake and due work
anubis status [--by-origin]       subscription counts by integration and status; paused ones
anubis pause KEY [--reason TEXT]  stop sending to one integration (intake goes on)
anubis resume KEY                 send to it again
anubis names import [FILE]        import the IBGE names census (gender inference)
anubis student KEY                one student: status, why, every attempt (45, #45 or a CPF)
anubis student --needs-attention  every student an operator must look at, with the reason
anubis report [--days N]          business metrics per integration (volume, success, latency)
anubis shadow on|off KEY          shadow run: send nothing, record "would send" (docs/shadow.md)
anubis shadow report KEY          compare the shadow run with the legacy's records
anubis doctor [--markdown]        effective configuration and every problem found (exit 1 if any)
anubis digest [--hours N]         send each integration's digest now (as the daily schedule does)
anubis privacy export KEY [-o F]  everything held about a student, unmasked, to a 0600 file
anubis privacy erase KEY [--dry-run]  anonymise a student everywhere; never sent again
anubis go-live KEY --at T         orders paid before T are the legacy's (docs/cutover.md)
anubis takeover KEY --from --to   send a range paid before go-live anyway
anubis legacy import ...          import what a legacy service sent
anubis events tail [-n N]         the newest events of the outbox (docs/events.md)

The sandboxes, the webhook sink and the demo order generator are not production tools: they
ship in the separate `anubis_sandboxes` package (`anubis-sandbox --help`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from anubis_dagster.console.student_cli import add_student_parser
from anubis_dagster.db.session import default_database_url, session_scope
from anubis_dagster.legacy.shadow_cli import add_shadow_parser
from anubis_dagster.maintenance.privacy_cli import add_privacy_parser


def _cmd_db_upgrade(_args: argparse.Namespace) -> int:
    from anubis_dagster.resources import prepare_database

    prepare_database(default_database_url())
    print("app database is at the latest schema; integrations synced")
    return 0


def _cmd_orders_load(args: argparse.Namespace) -> int:
    """All or nothing: every line is checked first; any bad line loads nothing (exit 1) unless
    `--skip-bad`, which loads the good lines and reports the bad ones."""
    from anubis_dagster.intake.orders_source import OrdersSource, read_orders_file

    path = Path(args.file)
    if not path.is_file():
        print(f"error: {path}: no such file", file=sys.stderr)
        return 1
    checked = read_orders_file(path)
    for error in checked.errors:
        print(f"error: {error}", file=sys.stderr)
    if checked.errors and not args.skip_bad:
        print(
            f"{len(checked.errors)} errors: nothing loaded (fix the lines above, or pass "
            f"--skip-bad to load the {len(checked.orders)} good orders)",
            file=sys.stderr,
        )
        return 1
    source = OrdersSource()
    count = source.load(checked.orders)
    notes = []
    if checked.repeated:
        notes.append(f"{checked.repeated} identical repeated lines loaded once")
    if checked.errors:
        notes.append(f"{len(checked.errors)} errors skipped")
    where = source.engine.url.render_as_string(hide_password=True)
    print(f"loaded {count} orders into {where}" + (f" ({'; '.join(notes)})" if notes else ""))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from anubis_dagster.cli.status import (
        attempt_counts,
        attempts_heading,
        format_table,
        status_counts,
    )
    from anubis_dagster.db.ready import prepare_for_reading
    from anubis_dagster.delivery.pause import paused_integrations
    from anubis_dagster.intake.orders_source import OrdersSource
    from anubis_dagster.legacy.go_live import go_live_lines
    from anubis_dagster.legacy.modes import shadow_modes

    if args.attempt_days < 0:
        print("anubis: --attempt-days must be 0 or more", file=sys.stderr)
        return 2
    url = default_database_url()
    prepare_for_reading(url)
    with session_scope(url) as session:
        rows = status_counts(session, by_origin=args.by_origin)
        attempts = attempt_counts(session, days=args.attempt_days)
        paused = paused_integrations(session)
        shadow = shadow_modes(session)
        going_live = go_live_lines(session, OrdersSource())
    for key, since in shadow.items():
        print(f"SHADOW: {key} since {since:%Y-%m-%d %H:%M} UTC (nothing written at the partner)")
    for key, (since, reason) in paused.items():
        print(f"PAUSED: {key} since {since:%Y-%m-%d %H:%M} UTC" + (f": {reason}" if reason else ""))
    if paused or shadow:
        print()
    headers = (
        ("integration", "origin", "status", "subscriptions")
        if args.by_origin
        else ("integration", "status", "subscriptions")
    )
    print(format_table(rows, headers))
    print()
    print(attempts_heading(args.attempt_days) + ":")
    print(format_table(attempts, ("integration", "operation", "outcome", "attempts")))
    if going_live:
        print("\n" + "\n".join(going_live))
    return 0


def _cmd_pause(args: argparse.Namespace) -> int:
    """`anubis pause` and `anubis resume`: the same rule and alert as the `pause_integration`
    job, for operators without the UI."""
    from anubis_dagster.alerts.webhook import send_alert
    from anubis_dagster.delivery.pause import UnknownIntegration, pause_alert, set_paused
    from anubis_dagster.resources import prepare_database

    url = default_database_url()
    prepare_database(url)
    try:
        with session_scope(url) as session:
            change = set_paused(session, args.key, args.paused, args.reason)
    except UnknownIntegration as exc:
        print(f"anubis: {exc.args[0]}", file=sys.stderr)
        return 1
    if change.changed:
        send_alert(pause_alert(change))
    print(change.describe())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from anubis_dagster.cli.runner import run_pass, run_until
    from anubis_dagster.definitions import build_definitions
    from anubis_dagster.runtime.instance import get_instance

    defs = build_definitions()  # from the environment as it is now
    if args.watch:
        result = run_until(
            defs, get_instance(), watch_seconds=args.watch, settle_seconds=args.settle_seconds
        )
    else:
        result = run_pass(defs, get_instance(), settle_seconds=args.settle_seconds)
    if result.failed:
        for job, run_id, _ in result.failed:
            print(f"FAILED: {job} run {run_id} (see it in the Dagster UI)", file=sys.stderr)
        return 1
    return 0


def _cmd_digest(args: argparse.Namespace) -> int:
    """The daily digest now, one run of `daily_digest_job` per enabled integration."""
    from sqlalchemy import select

    from anubis_dagster.cli.runner import console_loggers
    from anubis_dagster.db.models import Integration
    from anubis_dagster.definitions import build_definitions
    from anubis_dagster.runtime.instance import get_instance
    from anubis_dagster.runtime.launching import execute_job_run

    defs = build_definitions()
    instance = get_instance()
    with session_scope(default_database_url()) as session:
        keys = list(session.scalars(select(Integration.key).where(Integration.enabled.is_(True))))
    failed = 0
    for key in keys:
        launched = execute_job_run(
            defs,
            "daily_digest_job",
            instance,
            run_config={
                "ops": {"send_daily_digest": {"config": {"hours": args.hours}}},
                "loggers": console_loggers(),
            },
            partition_key=key,
            launched_by="anubis digest",
        )
        print(f"{key}: digest {'sent' if launched.success else 'FAILED'} (run {launched.run_id})")
        failed += not launched.success
    return 1 if failed else 0


def _cmd_names_import(args: argparse.Namespace) -> int:
    from anubis_dagster.reference_data.names import SAMPLE_CSV, import_names, read_names_csv
    from anubis_dagster.resources import prepare_database

    url = default_database_url()
    prepare_database(url)
    path = Path(args.file) if args.file else SAMPLE_CSV
    with session_scope(url) as session:
        count = import_names(session, read_names_csv(path))
    print(f"imported {count} name rows from {path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from anubis_dagster.console.report import build_report, format_report
    from anubis_dagster.db.ready import prepare_for_reading

    url = default_database_url()
    prepare_for_reading(url)
    with session_scope(url) as session:
        reports = build_report(session, days=args.days)
    print(format_report(reports, args.days))
    return 0


def _cmd_events_tail(args: argparse.Namespace) -> int:
    """The newest outbox events (issue 25), one JSON line each, masked, with their state."""
    from anubis_dagster.events.tail import tail_lines
    from anubis_dagster.resources import prepare_database

    url = default_database_url()
    prepare_database(url)
    with session_scope(url) as session:
        for line in tail_lines(session, args.n):
            print(line)
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    """Exit 1 when any problem is found, so deploy scripts can gate on it."""
    from anubis_dagster.doctor import diagnose
    from anubis_dagster.settings import markdown_table

    if args.markdown:
        print(markdown_table())
        return 0
    report = diagnose()
    print(report.render())
    return 1 if report.problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anubis", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_operating_commands(sub)
    add_shadow_parser(sub)
    add_student_parser(sub)
    add_privacy_parser(sub)
    _add_reading_commands(sub)
    from anubis_dagster.legacy.commands import add_commands

    add_commands(sub)  # go-live, takeover, legacy import (issue 20)
    return parser


def _add_data_commands(sub: Any) -> None:
    """`db upgrade`, `orders load`, `names import`: what the app DB and the orders hold."""
    db = sub.add_parser("db", help="app database").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="migrate to the latest schema").set_defaults(func=_cmd_db_upgrade)

    orders = sub.add_parser("orders", help="the orders source").add_subparsers(
        dest="orders_command", required=True
    )
    load = orders.add_parser(
        "load", help="load a JSON Lines file of orders (all or nothing; for demos and tests)"
    )
    load.add_argument("file")
    load.add_argument(
        "--skip-bad", action="store_true", help="load the good lines and report the bad ones"
    )
    load.set_defaults(func=_cmd_orders_load)

    names = sub.add_parser("names", help="IBGE names census").add_subparsers(
        dest="names_command", required=True
    )
    names_import = names.add_parser("import", help="import a name,gender,frequency CSV")
    names_import.add_argument("file", nargs="?")
    names_import.set_defaults(func=_cmd_names_import)


def _add_operating_commands(sub: Any) -> None:
    """`status`, `pause`/`resume`, `run`: what an operator runs to see and steer delivery."""
    status = sub.add_parser("status", help="subscription counts by integration and status")
    status.add_argument("--by-origin", action="store_true", help="split by marketplace too")
    status.add_argument(
        "--attempt-days",
        type=int,
        default=7,  # status.ATTEMPT_DAYS (not imported here: `--help` stays light)
        metavar="N",
        help="count the attempts of the last N days (default 7; 0: every attempt, slow on a "
        "large app DB)",
    )
    status.set_defaults(func=_cmd_status)

    pause = sub.add_parser("pause", help="stop sending to one integration; intake goes on")
    pause.add_argument("key", help="the integration's key (kroton, estacio, …)")
    pause.add_argument("--reason", default="", help="why (shown in the alert and status)")
    pause.set_defaults(func=_cmd_pause, paused=True)
    resume = sub.add_parser("resume", help="send to a paused integration again")
    resume.add_argument("key", help="the integration's key")
    resume.set_defaults(func=_cmd_pause, paused=False, reason="")

    run = sub.add_parser("run", help="one in-process pass: intake, then due work")
    run.add_argument(
        "--settle-seconds",
        type=float,
        default=None,
        help="leave orders younger than this for the next pass (default: "
        "ANUBIS_INTAKE_SETTLE_SECONDS)",
    )
    run.add_argument(
        "--watch",
        type=float,
        default=0,
        metavar="SECONDS",
        help="keep passing while work falls due within SECONDS",
    )
    run.set_defaults(func=_cmd_run)


def _add_reading_commands(sub: Any) -> None:
    """`report`, `digest`, `events tail`, `doctor`: what an operator reads."""
    report = sub.add_parser(
        "report", help="business metrics per integration (volume, success, latency, conversion)"
    )
    report.add_argument("--days", type=int, default=30, help="subscriptions created since")
    report.set_defaults(func=_cmd_report)

    digest = sub.add_parser("digest", help="send each integration's digest now")
    digest.add_argument("--hours", type=int, default=24, help="the window: the last N hours")
    digest.set_defaults(func=_cmd_digest)

    events = sub.add_parser("events", help="events for other services (outbox → Kafka)")
    tail = events.add_subparsers(dest="events_command", required=True).add_parser(
        "tail", help="the newest outbox events, masked, published or waiting"
    )
    tail.add_argument("-n", type=int, default=20, help="how many (default 20)")
    tail.set_defaults(func=_cmd_events_tail)

    doctor = sub.add_parser("doctor", help="effective configuration and every problem with it")
    doctor.add_argument(
        "--markdown", action="store_true", help="print the README's table of variables instead"
    )
    doctor.set_defaults(func=_cmd_doctor)


def main(argv: list[str] | None = None) -> int:
    import warnings

    from anubis_dagster.config.integrations import ConfigError
    from anubis_dagster.settings import SettingsError

    # Dagster's own definitions warn about its beta parameters: noise on an operator's terminal
    warnings.filterwarnings("ignore", message=r".* is currently in beta", module="dagster")

    try:  # the parser reads settings too (defaults of options)
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except (SettingsError, ConfigError) as exc:  # a bad setting: its message, no traceback
        print(f"anubis: {exc}", file=sys.stderr)
        return 1
