"""Legacy import at scale: 1,000,000 legacy Kroton students (seed 001's `subscriptions` and
`follow_ups`) imported into a fresh PostgreSQL app DB by `anubis legacy import`'s code.

Why each number is here:

- **first import**: legacy rows per second through `legacy.operations.run_import` (the reader's
  keyset pages, the importer's two lookups per batch, COPY of subscriptions and events), and the
  peak RSS of the process that ran it (a child process, so generating the data does not count);
- **second import**: the same again (idempotency: nothing may change), the cost of a resumed or
  repeated import;
- **physical limit**: in the same run, the same legacy rows read with one query and written raw
  (`COPY` of the same number of subscription rows and event rows, no Anubis code) into tables
  shaped like the app DB's, in a child process of its own.

    .venv/bin/python -m benchmarks.legacy_import_bench               # 1,000,000 rows
    .venv/bin/python -m benchmarks.legacy_import_bench --rows 50000  # a quick look
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.intake_bench import admin_url, machine_line, markdown_table

STATUSES = (  # a plausible legacy mix: most registered long ago, some still open
    ("enrolled", 30),
    ("dropped", 20),
    ("registered", 25),
    ("awaiting_register", 5),
    ("failed", 8),
    ("register_failed", 5),
    ("empty_course", 3),
    ("to_sync", 2),
    ("to_register", 1),
    ("course_failed", 1),
)
SENT = {"enrolled", "dropped", "registered", "awaiting_register", "failed"}


def cpf_of(n: int) -> str:
    base = [int(d) for d in f"{(n * 7919 + 123456789) % 10**9:09d}"]
    if len(set(base)) == 1:
        base[0] = (base[0] + 1) % 10
    for length in (9, 10):
        total = sum(d * (length + 1 - i) for i, d in enumerate(base[:length]))
        base.append((total * 10 % 11) % 10)
    return "".join(map(str, base))


def _database(name: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url()).set(database=name).render_as_string(hide_password=False)


def _drop(name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def generate_legacy(url: str, rows: int) -> None:
    """The legacy tables (seed 001's shape), filled with COPY: every student has a status from
    the mix above; those the legacy sent have one follow-up with Kroton's id and answer."""
    import psycopg
    from sqlalchemy import create_engine

    from anubis_dagster_tests.legacy_kroton import metadata

    engine = create_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    weights = [w for _, w in STATUSES]
    cycle = [s for (s, _), w in zip(STATUSES, weights, strict=True) for _ in range(w)]
    start = datetime(2025, 12, 1, tzinfo=UTC)
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as connection, connection.cursor() as cursor:
        with cursor.copy(
            "COPY subscriptions (id, user_name, cpf, email, sent_at, status) FROM STDIN"
        ) as copy:
            for n in range(1, rows + 1):
                status = cycle[n % len(cycle)]
                sent = start + timedelta(seconds=n * 30) if status in SENT else None
                copy.write_row(
                    (n, "Maria Aparecida dos Santos", cpf_of(n), f"a{n}@example.com.br", sent,
                     status)
                )  # fmt: skip
        with cursor.copy(
            "COPY follow_ups (kroton_subscription_id, kroton_subscription_dealer_id, source, "
            "subscription_id, created_at, updated_at) FROM STDIN"
        ) as copy:
            for n in range(1, rows + 1):
                status = cycle[n % len(cycle)]
                if status not in SENT:
                    continue
                sent = start + timedelta(seconds=n * 30)
                source = json.dumps({"inscricaoId": str(7_000_000 + n), "status": "SUCCESS"})
                copy.write_row((str(7_000_000 + n), "DL1", source, n, sent, sent))
        cursor.execute("ANALYZE subscriptions")
        cursor.execute("ANALYZE follow_ups")
        connection.commit()


def _import_child(app_url: str, legacy_url: str, queue: Any) -> None:
    """One import in this process; reports rows/s and this process's peak RSS."""
    from anubis_dagster.legacy.operations import run_import
    from anubis_dagster.legacy.readers import KrotonLegacyReader
    from anubis_dagster.resources import prepare_database

    prepare_database(app_url)  # migrations checked and integrations synced: start-up, not import
    started = time.perf_counter()
    report, _ = run_import(app_url, "kroton", KrotonLegacyReader(legacy_url), tty=False)
    elapsed = time.perf_counter() - started
    queue.put(
        {
            "seconds": elapsed,
            "read": report.read,
            "imported": report.total_imported,
            "unchanged": report.unchanged,
            "skipped": sum(report.skipped.values()),
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


def _raw_child(app_url: str, legacy_url: str, queue: Any) -> None:
    """The physical limit: the same rows read with one query and COPYed raw into tables shaped
    like `subscriptions` and `subscription_events` (one subscription row and one event row per
    legacy row, one more event per follow-up), no Anubis code."""
    import psycopg

    src = legacy_url.replace("postgresql+psycopg://", "postgresql://")
    dst = app_url.replace("postgresql+psycopg://", "postgresql://")
    started = time.perf_counter()
    rows = 0
    with psycopg.connect(dst) as target, target.cursor() as cursor:
        cursor.execute("CREATE TABLE raw_subscriptions (LIKE subscriptions INCLUDING ALL)")
        cursor.execute("CREATE TABLE raw_events (LIKE subscription_events INCLUDING ALL)")
        now = datetime.now(UTC)
        with psycopg.connect(src) as source, source.cursor(name="legacy") as read:
            read.itersize = 10_000
            read.execute(
                "SELECT s.id, s.cpf, s.status, s.sent_at, f.kroton_subscription_id, f.source "
                "FROM subscriptions s LEFT JOIN follow_ups f ON f.subscription_id = s.id "
                "ORDER BY s.id"
            )
            with target.cursor() as write:
                subs = write.copy(
                    "COPY raw_subscriptions (id, integration_id, order_id, cpf, payload, "
                    "ies_data, status, attempts, external_id, sent_at, legacy_status, "
                    "created_at, updated_at) FROM STDIN"
                )
                events: list[tuple[Any, ...]] = []
                with subs as copy:
                    for sid, cpf, status, sent, partner, source_json in read:
                        rows += 1
                        copy.write_row(
                            (sid, 1, -sid, cpf, json.dumps({"legacy": {"status": status}}),
                             "{}", status, 0, partner, sent, status, sent or now, now)
                        )  # fmt: skip
                        events.append((sid, status, now))
                        if source_json is not None:
                            events.append((sid, None, sent or now))
                with write.copy(
                    "COPY raw_events (subscription_id, status, operation_name, model, kind, "
                    "created_at, updated_at) FROM STDIN"
                ) as copy:
                    for sid, status, at in events:
                        copy.write_row((sid, status, "legacy_import", "Subscription",
                                        "transition", at, at))  # fmt: skip
        target.commit()
    queue.put(
        {
            "seconds": time.perf_counter() - started,
            "read": rows,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


def _in_child(target: Any, *args: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    if process.exitcode:
        raise RuntimeError(f"{target.__name__} failed")
    return dict(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    args = parser.parse_args(argv)

    legacy_name, app_name = "anubis_bench_legacy", "anubis_bench_legacy_app"
    legacy_url = _database(legacy_name)
    app_url = _database(app_name)
    try:
        os.environ["ANUBIS_DATABASE_URL"] = app_url
        from anubis_dagster.resources import prepare_database

        prepare_database(app_url)
        started = time.perf_counter()
        generate_legacy(legacy_url, args.rows)
        generated = time.perf_counter() - started
        first = _in_child(_import_child, app_url, legacy_url)
        second = _in_child(_import_child, app_url, legacy_url)
        raw = _in_child(_raw_child, app_url, legacy_url)
    finally:
        if not args.keep:
            _drop(legacy_name)
            _drop(app_name)
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()

    def rate(result: dict[str, Any]) -> str:
        return f"{result['read'] / result['seconds']:,.0f}"

    rows = [
        ("first import (run_import)", f"{first['seconds']:.1f}", rate(first),
         f"{first['rss_mb']:.0f}", f"{first['imported']:,} imported, {first['skipped']} skipped"),
        ("second import (idempotent)", f"{second['seconds']:.1f}", rate(second),
         f"{second['rss_mb']:.0f}", f"{second['imported']} imported, {second['unchanged']:,} "
         "unchanged"),
        ("physical limit: one SELECT + raw COPY", f"{raw['seconds']:.1f}", rate(raw),
         f"{raw['rss_mb']:.0f}", "same rows, no Anubis code"),
    ]  # fmt: skip
    print(f"Legacy import, {args.rows:,} legacy Kroton rows, PostgreSQL; revision {revision}")
    print(machine_line())
    print(f"(generating the legacy tables took {generated:.0f} s, not measured below)")
    print()
    print(markdown_table(("pass", "seconds", "rows/s", "peak RSS MB", "result"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
