"""`anubis student`: one student (status, why, every attempt) or every student an operator
must look at, from a terminal; the same views as the console jobs (`console/student.py`,
`console/attention.py`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from anubis_dagster.db.session import default_database_url, session_scope


def add_student_parser(sub: Any) -> None:
    """Add `anubis student` to the `anubis` command's subparsers."""
    student = sub.add_parser(
        "student", help="find a student: status, why, every attempt (order id, #sub id or CPF)"
    )
    student.add_argument(
        "key", nargs="?", help="order id (or order:45), subscription id (#45) or CPF"
    )
    student.add_argument(
        "--needs-attention",
        action="store_true",
        help="every student dead-lettered, refused, held for review or waiting over 24 h",
    )
    student.add_argument("--integration", help="with --needs-attention: this integration only")
    student.add_argument("--since", help="with --needs-attention: ingested since (ISO 8601)")
    student.set_defaults(func=_cmd_student)


def _cmd_student(args: argparse.Namespace) -> int:
    from anubis_dagster.alerts.webhook import run_url
    from anubis_dagster.console.student import (
        LookupKeyError,
        find_student,
        parse_key,
        render_markdown,
    )
    from anubis_dagster.db.ready import prepare_for_reading

    if args.needs_attention:
        return _student_attention(args) if args.key is None else _usage_student()
    if args.key is None:
        return _usage_student()
    try:
        key = parse_key(args.key)
    except LookupKeyError as exc:
        print(f"anubis student: {exc}", file=sys.stderr)
        return 2
    url = default_database_url()
    prepare_for_reading(url)
    with session_scope(url) as session:
        views = find_student(session, key)
    print(render_markdown(key, views, run_url))
    return 0 if views else 1


def _usage_student() -> int:
    print("anubis student: give a KEY, or --needs-attention (not both)", file=sys.stderr)
    return 2


def _student_attention(args: argparse.Namespace) -> int:
    """Every student an operator has to look at (`console/attention.py`), masked."""
    from datetime import UTC, datetime

    from anubis_dagster.console.attention import format_attention, needs_attention
    from anubis_dagster.db.ready import prepare_for_reading

    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError:
            print(
                f"anubis student: --since {args.since!r} is not an ISO 8601 time", file=sys.stderr
            )
            return 2
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
    url = default_database_url()
    prepare_for_reading(url)
    with session_scope(url) as session:
        result = needs_attention(session, integration=args.integration, since=since)
    print(format_attention(result))
    return 0
