"""Retention over a large backlog (issue 22): N old subscriptions in every status, each with an
attempt event, a follow-up and a quarantined order, all past their age, on PostgreSQL (default)
or SQLite. Measures the dry run and the real run (wall time, tracemalloc peak of the pass, the
process's peak RSS) and a second run on the scrubbed tables (what every later week costs).

    .venv/bin/python -m benchmarks.retention_bench --rows 50000
    .venv/bin/python -m benchmarks.retention_bench --rows 50000 --sqlite
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

from anubis_dagster.config.integrations import load_integrations, sync_integrations
from anubis_dagster.core.states import Status, holds_cpf
from anubis_dagster.db.migrate import upgrade
from anubis_dagster.db.models import (
    FollowUp,
    IntakeQuarantine,
    Integration,
    Subscription,
    SubscriptionEvent,
)
from anubis_dagster.db.session import get_engine, session_scope
from anubis_dagster.maintenance import pii

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
NAME = "Josefina Quiteria Barbosa"


def _database(sqlite: bool) -> str:
    if sqlite:
        return f"sqlite:///{Path(tempfile.mkdtemp()) / 'retention.db'}"
    admin = create_engine(make_url(ADMIN), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text('DROP DATABASE IF EXISTS "anubis_retention_bench" WITH (FORCE)'))
        connection.execute(text('CREATE DATABASE "anubis_retention_bench"'))
    admin.dispose()
    return make_url(ADMIN).set(database="anubis_retention_bench").render_as_string(False)


def _fill(url: str, rows: int) -> None:
    statuses = list(Status)
    when = datetime.now(UTC) - timedelta(days=800)
    stamps = {"created_at": when, "updated_at": when}
    with session_scope(url) as session:
        sync_integrations(session, load_integrations())
        kroton = session.scalars(select(Integration.id).where(Integration.key == "kroton")).one()
    chunk = 5000
    for start in range(0, rows, chunk):
        subs: list[dict[str, Any]] = []
        for n in range(start + 1, min(rows, start + chunk) + 1):
            status = statuses[n % len(statuses)]
            cpf = f"{n:011d}"
            subs.append(
                {
                    "id": n,
                    "integration_id": kroton,
                    "order_id": n,
                    "cpf": cpf,
                    "active_cpf": cpf if holds_cpf(status) else None,
                    "payload": {"id": n, "base_user": {"full_name": NAME, "cpf": cpf}},
                    "status": status.value,
                    "attempts": 0,
                    "ies_data": {"endereco": "Avenida Paulista 1000"},
                    "last_error": f"partner: {NAME}",
                    **stamps,
                }
            )
        with session_scope(url) as session:
            session.execute(insert(Subscription), subs)
            session.execute(
                insert(SubscriptionEvent),
                [
                    {
                        "subscription_id": s["id"],
                        "integration_id": kroton,
                        "kind": "attempt",
                        "operation_name": "register",
                        "model": "Subscription",
                        "request": {"nome": NAME},
                        "response": {"ok": True},
                        "error_message": NAME,
                        **stamps,
                    }
                    for s in subs
                ],
            )
            session.execute(
                insert(FollowUp),
                [{"subscription_id": s["id"], "source": {"nome": NAME}, **stamps} for s in subs],
            )
            session.execute(
                insert(IntakeQuarantine),
                [
                    {
                        "order_id": s["id"],
                        "integration_key": "kroton",
                        "kind": "write_failed",
                        "reason": NAME,
                        "attempts": 1,
                        **stamps,
                    }
                    for s in subs
                ],
            )
    if url.startswith("postgresql"):
        with get_engine(url).begin() as connection:
            connection.execute(text("SELECT setval('subscriptions_id_seq', :n)"), {"n": rows})
            connection.execute(text("ANALYZE"))


def _pass(url: str, *, dry_run: bool) -> tuple[float, float, pii.RetentionReport]:
    now = datetime.now(UTC)
    tracemalloc.start()
    started = time.perf_counter()
    report = pii.apply_retention(
        lambda: session_scope(url),
        now - timedelta(days=365),
        open_cutoff=now - timedelta(days=730),
        dry_run=dry_run,
    )
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return elapsed, peak / 2**20, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()
    url = _database(args.sqlite)
    upgrade(url)
    started = time.perf_counter()
    _fill(url, args.rows)
    print(
        f"backend {make_url(url).get_backend_name()}, {args.rows} subscriptions, fill "
        f"{time.perf_counter() - started:.1f} s"
    )
    for label, dry in (("dry run", True), ("real run", False), ("second run", False)):
        elapsed, peak, report = _pass(url, dry_run=dry)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        counts = report.as_metadata()
        events = counts["rows_scrubbed:subscription_events"]
        print(
            f"{label}: {elapsed:.1f} s, tracemalloc peak {peak:.1f} MiB, max RSS {rss:.0f} MiB, "
            f"anonymised {counts['subscriptions_anonymized']}, expired "
            f"{counts['subscriptions_expired']}, events {events}, "
            f"follow-ups {counts['follow_ups_cleared']}, batches {counts['batches']}"
        )


if __name__ == "__main__":
    main()
