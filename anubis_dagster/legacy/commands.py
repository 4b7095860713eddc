"""The going-live subcommands of `anubis` (see docs/cutover.md):

anubis go-live KEY --at T [--dry-run]                orders paid before T are never sent
anubis takeover KEY --from T --to T [--dry-run]      send a range paid before go-live anyway
anubis legacy import --integration KEY (--database-url URL | --csv FILE) [--skip-bad] [--dry-run]
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-12-07T03:00:00+00:00)"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add +00:00 or Z)")
    return value.astimezone(UTC)


def _url() -> str:
    from anubis_dagster.db.session import default_database_url

    return default_database_url()


def _cmd_go_live(args: argparse.Namespace) -> int:
    from anubis_dagster.legacy.go_live import UnknownIntegration
    from anubis_dagster.legacy.operations import run_go_live

    try:
        change = run_go_live(_url(), args.key, args.at, dry_run=args.dry_run)
    except UnknownIntegration as exc:
        print(f"anubis: {exc}", file=sys.stderr)
        return 1
    print(change.describe())
    return 0


def _cmd_takeover(args: argparse.Namespace) -> int:
    from anubis_dagster.legacy.go_live import UnknownIntegration
    from anubis_dagster.legacy.operations import run_takeover

    try:
        report = run_takeover(_url(), args.key, args.start, args.end, dry_run=args.dry_run)
    except (UnknownIntegration, ValueError) as exc:
        print(f"anubis: {exc}", file=sys.stderr)
        return 1
    print(report.describe())
    return 0


def _cmd_legacy_import(args: argparse.Namespace) -> int:
    from anubis_dagster.legacy.operations import (
        LegacyCsvInvalid,
        LegacySourceMissing,
        reader_for,
        run_import,
    )

    # the progress counts (and the summary) of this command only, not every library's INFO
    logger = logging.getLogger("anubis_dagster.legacy")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        reader = reader_for(args.integration, database_url=args.database_url, csv_path=args.csv)
        report, errors = run_import(
            _url(),
            args.integration,
            reader,
            skip_bad=args.skip_bad,
            dry_run=args.dry_run,
            batch_size=args.batch_size,
        )
    except LegacyCsvInvalid as exc:
        for error in exc.errors:
            print(f"error: {error}", file=sys.stderr)
        print(str(exc), file=sys.stderr)
        return 1
    except (LegacySourceMissing, ValueError) as exc:
        print(f"anubis: {exc}", file=sys.stderr)
        return 1
    for error in errors:
        print(f"skipped: {error}", file=sys.stderr)
    print(report.describe())
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    go_live = sub.add_parser(
        "go-live", help="set an integration's go-live point: orders paid before it are not sent"
    )
    go_live.add_argument("key", help="the integration's key")
    go_live.add_argument("--at", type=_time, required=True, help="ISO 8601 time with zone")
    go_live.add_argument("--dry-run", action="store_true", help="say what would change")
    go_live.set_defaults(func=_cmd_go_live)

    over = sub.add_parser(
        "takeover", help="send the orders paid in a range before the go-live point anyway"
    )
    over.add_argument("key", help="the integration's key")
    over.add_argument("--from", dest="start", type=_time, required=True, help="from (included)")
    over.add_argument("--to", dest="end", type=_time, required=True, help="to (excluded)")
    over.add_argument("--dry-run", action="store_true", help="count, change nothing")
    over.set_defaults(func=_cmd_takeover)

    legacy = sub.add_parser("legacy", help="the legacy services").add_subparsers(
        dest="legacy_command", required=True
    )
    imp = legacy.add_parser(
        "import", help="import what a legacy service sent (never sent again; followed)"
    )
    imp.add_argument("--integration", required=True, help="the integration's key")
    imp.add_argument(
        "--database-url",
        help="Kroton's legacy database (default: ANUBIS_LEGACY_KROTON_DATABASE_URL)",
    )
    imp.add_argument("--csv", help="a legacy CSV export (docs/cutover.md)")
    imp.add_argument("--skip-bad", action="store_true", help="import the CSV's good lines")
    imp.add_argument("--dry-run", action="store_true", help="count, change nothing")
    imp.add_argument("--batch-size", type=int, default=5000, help="records per transaction")
    imp.set_defaults(func=_cmd_legacy_import)
