"""Events out (issue 25): how fast the outbox publisher drains a burst of status changes.

    .venv/bin/python -W ignore -m benchmarks.events_bench            # 100k changes, PostgreSQL
    .venv/bin/python -W ignore -m benchmarks.events_bench --sqlite   # the same on a SQLite file
    .venv/bin/python -W ignore -m benchmarks.events_bench --count 10000

The broker is librdkafka's mock cluster (in this process, over TCP on 127.0.0.1): it measures
Anubis's side (database reads and marks, serialisation, the producer), not a real cluster's
disks or network. In one run:

1. `--count` subscriptions are created in `to_register` (bulk, not timed);
2. a writer PROCESS moves them all to `registered` in transactions of `--chunk` changes
   through `transitions.write_rows` (so each change writes its outbox row in its transaction),
   while the publisher (`OutboxPublisher.drain`, settings' batch size) drains the outbox in
   this process at the same time, as the sensor would tick after tick, without pauses;
3. reported: the burst's write rate; events/s published from the first change to the last
   mark; the lag of each event (`published_at - created_at`: written → acknowledged and
   marked) as p50/p95/max; and how long after the last change the outbox was empty;
4. the publisher's own ceiling: every row set unpublished again (a backlog of `--count`, as
   after a broker outage) and drained with nobody writing, events/s;
5. the raw producer rate in the same run: as many messages of the same size, same producer
   settings, straight to the same cluster, no database.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

POSTGRES_ADMIN_ENV = "ANUBIS_BENCH_POSTGRES_URL"
DEFAULT_POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def fresh_database(sqlite: bool, directory: Path) -> tuple[str, str | None]:
    if sqlite:
        return f"sqlite:///{directory / 'events_bench.db'}", None
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = os.environ.get(POSTGRES_ADMIN_ENV, DEFAULT_POSTGRES_ADMIN)
    name = f"anubis_bench_events_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin).set(database=name).render_as_string(hide_password=False), name


def drop_database(name: str | None) -> None:
    if name is None:
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(
        os.environ.get(POSTGRES_ADMIN_ENV, DEFAULT_POSTGRES_ADMIN), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def create_subscriptions(url: str, count: int) -> list[int]:
    from sqlalchemy import select

    from anubis_dagster.config.integrations import load_integrations, sync_integrations
    from anubis_dagster.core.states import Status
    from anubis_dagster.db.migrate import upgrade
    from anubis_dagster.db.models import Integration, utcnow
    from anubis_dagster.db.session import session_scope
    from anubis_dagster.db.transitions import (
        allocate_subscription_ids,
        subscription_values,
        write_rows,
    )

    upgrade(url)
    with session_scope(url) as session:
        sync_integrations(session, load_integrations())
        integration = session.scalar(select(Integration.id).where(Integration.key == "kroton"))
        assert integration is not None
    ids: list[int] = []
    for start in range(0, count, 10_000):
        size = min(10_000, count - start)
        with session_scope(url) as session:
            chunk = allocate_subscription_ids(session, size)
            now = utcnow()
            rows = [
                {
                    "id": sid,
                    "created_at": now,
                    "updated_at": now,
                    **subscription_values(
                        integration_id=integration,
                        integration_filter_id=None,
                        order={"id": sid, "origin": "quero_bolsa"},
                        order_id=sid,
                        cpf=None,
                        status=Status.TO_REGISTER,
                    ),
                }
                for sid in chunk
            ]
            write_rows(session, subscriptions=rows, updates=[], events=[])
        ids += chunk
    return ids


def write_burst(url: str, ids: list[int], chunk: int, started: Any) -> None:
    """The writer process: every subscription to `registered`, `chunk` per transaction."""
    from anubis_dagster.core.states import Status
    from anubis_dagster.db.models import utcnow
    from anubis_dagster.db.session import session_scope
    from anubis_dagster.db.transitions import (
        TRANSITION,
        event_values,
        transition_values,
        write_rows,
    )

    started.set()
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        with session_scope(url) as session:
            now = utcnow()
            updates = [
                {
                    "id": sid,
                    **transition_values(
                        "to_register", Status.REGISTERED, cpf=None, error=None, now=now
                    ),
                }
                for sid in part
            ]
            events = [
                {
                    **event_values(
                        subscription_id=sid,
                        integration_id=None,
                        kind=TRANSITION,
                        status="registered",
                        operation="register",
                        run_id="bench",
                    ),
                    "created_at": now,
                    "updated_at": now,
                }
                for sid in part
            ]
            write_rows(session, subscriptions=[], updates=updates, events=events)


def raw_producer_rate(bootstrap: str, count: int, size: int) -> float:
    from confluent_kafka import Producer

    from anubis_dagster.events.publisher import producer_config
    from anubis_dagster.settings import get_settings

    producer = Producer(producer_config(get_settings()))
    value = b"x" * size
    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    delivered = 0

    def report(error: Any, _message: Any) -> None:
        nonlocal delivered
        delivered += error is None

    start = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, key=str(i).encode(), value=value, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    elapsed = time.perf_counter() - start
    assert delivered == count, f"{delivered} of {count} delivered"
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1000, help="changes per writer transaction")
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()

    from confluent_kafka import Producer

    directory = Path(tempfile.mkdtemp(prefix="anubis_bench_events_"))
    os.environ["ANUBIS_HOME"] = str(directory / "home")
    owner = Producer({"test.mock.num.brokers": 1, "log_level": 3})
    brokers = owner.list_topics(timeout=10).brokers.values()
    bootstrap = ",".join(f"{b.host}:{b.port}" for b in brokers)
    os.environ.update(
        ANUBIS_EVENTS_ENABLED="true",
        ANUBIS_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        ANUBIS_EVENTS_TOPIC_TEMPLATE=f"bench.{uuid.uuid4().hex[:8]}.{{type}}",
    )
    url, name = fresh_database(args.sqlite, directory)
    try:
        from sqlalchemy import select, update

        from anubis_dagster.db.models import OutboxEvent
        from anubis_dagster.db.session import get_engine, session_scope
        from anubis_dagster.events.publisher import OutboxPublisher
        from anubis_dagster.settings import get_settings

        settings = get_settings()
        print(
            f"backend: {'SQLite' if args.sqlite else 'PostgreSQL'}; {args.count} changes, "
            f"{args.chunk} per transaction; batch {settings.anubis_events_batch_size}"
        )
        ids = create_subscriptions(url, args.count)
        get_engine(url).dispose()  # the writer process opens its own connections
        context = multiprocessing.get_context("fork")
        started = context.Event()
        writer = context.Process(target=write_burst, args=(url, ids, args.chunk, started))
        publisher = OutboxPublisher.from_settings(url, settings)
        writer.start()
        started.wait()
        t0 = time.perf_counter()
        writer_done: float | None = None
        published = 0
        while True:
            report = publisher.drain(max_batches=settings.anubis_events_max_batches_per_tick)
            published += report.published
            if report.failed:
                raise SystemExit(f"delivery failed: {report.errors}")
            if writer_done is None and not writer.is_alive():
                writer_done = time.perf_counter()
                if writer.exitcode != 0:
                    raise SystemExit("the writer failed")
            if writer_done is not None and report.waiting == 0 and published >= args.count:
                break
            if report.published == 0:
                time.sleep(0.05)
        t_end = time.perf_counter()
        writer.join()
        with session_scope(url) as session:
            rows = session.execute(select(OutboxEvent.created_at, OutboxEvent.published_at)).all()
        assert len(rows) == args.count and all(p is not None for _, p in rows)
        lags = sorted((p - c).total_seconds() for c, p in rows)
        first = min(c for c, _ in rows)
        last = max(p for _, p in rows)
        span = (last - first) / timedelta(seconds=1)
        with session_scope(url) as session:  # a backlog, as after a broker outage
            session.execute(update(OutboxEvent).values(published_at=None))
        start = time.perf_counter()
        backlog = 0
        while True:
            report = publisher.drain(max_batches=settings.anubis_events_max_batches_per_tick)
            backlog += report.published
            if report.failed or report.waiting == 0:
                break
        backlog_rate = backlog / (time.perf_counter() - start)
        sample = json.dumps(publisher_value_sample(url))
        raw = raw_producer_rate(bootstrap, args.count, len(sample))
        result = {
            "changes": args.count,
            "burst_write_seconds": round((writer_done or t_end) - t0, 2),
            "burst_changes_per_s": round(args.count / ((writer_done or t_end) - t0)),
            "published_events_per_s": round(args.count / span),
            "lag_p50_s": round(statistics.median(lags), 2),
            "lag_p95_s": round(lags[int(0.95 * (len(lags) - 1))], 2),
            "lag_max_s": round(lags[-1], 2),
            "empty_after_last_change_s": round(t_end - (writer_done or t_end), 2),
            "backlog_drain_events_per_s": round(backlog_rate),
            "message_bytes": len(sample),
            "raw_producer_msgs_per_s": round(raw),
        }
        print(json.dumps(result, indent=2))
    finally:
        from anubis_dagster.db.session import get_engine

        get_engine(url).dispose()
        drop_database(name)


def publisher_value_sample(url: str) -> dict[str, Any]:
    from sqlalchemy import select

    from anubis_dagster.db import outbox
    from anubis_dagster.db.models import OutboxEvent
    from anubis_dagster.db.session import session_scope
    from anubis_dagster.events.publisher import message_value

    with session_scope(url) as session:
        row = session.scalars(select(OutboxEvent).limit(1)).one()
        return message_value(row, outbox.integration_keys(session))


if __name__ == "__main__":
    main()
