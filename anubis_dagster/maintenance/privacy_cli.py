"""`anubis privacy export|erase`: data-subject requests (LGPD art. 18) from a terminal, with
the same rules as the privacy jobs (`maintenance/privacy.py`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from anubis_dagster.db.session import default_database_url, session_scope


def add_privacy_parser(sub: Any) -> None:
    """Add `anubis privacy` to the `anubis` command's subparsers."""
    privacy_help = "order id, subscription id (#45) or CPF; - reads it from stdin"
    privacy_cmd = sub.add_parser(
        "privacy", help="data-subject requests (LGPD art. 18): export or erase a student"
    ).add_subparsers(dest="privacy_command", required=True)
    export = privacy_cmd.add_parser(
        "export", help="everything held about the student, unmasked, to a new 0600 file"
    )
    export.add_argument("key", help=privacy_help)
    export.add_argument("-o", "--output", help="the file (default anubis-privacy-export-*.json)")
    export.set_defaults(func=_cmd_privacy)
    erase = privacy_cmd.add_parser(
        "erase", help="anonymise the student everywhere in the app DB; never sent again"
    )
    erase.add_argument("key", help=privacy_help)
    erase.add_argument("--dry-run", action="store_true", help="count only; change nothing")
    erase.set_defaults(func=_cmd_privacy)


def _cmd_privacy(args: argparse.Namespace) -> int:
    """LGPD art. 18 (`maintenance/privacy.py`). KEY `-` reads it from stdin, so that a CPF
    stays out of the shell's history."""
    from datetime import UTC, datetime

    from anubis_dagster.console.student import LookupKeyError, parse_key
    from anubis_dagster.core.masking import mask_text
    from anubis_dagster.intake.orders_source import OrdersSource
    from anubis_dagster.maintenance import privacy
    from anubis_dagster.resources import prepare_database

    typed = sys.stdin.readline().strip() if args.key == "-" else args.key
    try:
        key = parse_key(typed)
    except LookupKeyError as exc:
        print(f"anubis privacy: {exc}", file=sys.stderr)
        return 2
    url = default_database_url()
    prepare_database(url)
    source = OrdersSource()
    try:
        with session_scope(url) as session:
            found = privacy.find_subject(session, key, source)
            if not found.subject.subscription_ids and not found.subject.order_ids:
                print(f"nothing held about {key.describe()}")
                return 1
            if args.privacy_command == "export":
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
                path = Path(args.output or f"anubis-privacy-export-{stamp}.json").resolve()
                written = privacy.export(session, found, path, source=source)
                message = f"export of {key.describe()} written to {path} (mode 0600): {written}"
            else:
                erasure = privacy.erase(session, found, dry_run=args.dry_run)
                message = f"{key.describe()}: {erasure.describe()}"
    except (privacy.PrivacyError, FileExistsError) as exc:
        print(f"anubis privacy: {mask_text(str(exc))}", file=sys.stderr)
        return 1
    for note in found.notes:
        print(f"note: {note}", file=sys.stderr)
    print(message)
    return 0
