"""Drains the event outbox to Kafka: at least once, in outbox order per subscription.

One batch: read the oldest unpublished rows (a short transaction: no database lock is held
while the brokers answer; on SQLite a transaction holds the write lock), produce each to its
topic with key = subscription id through an idempotent producer (librdkafka retries with
back-off within `delivery_timeout` and never duplicates or reorders a partition's messages
doing so), wait for the acknowledgements, then mark exactly the acknowledged rows published in
a second transaction. A publisher that dies between the two sends the batch again next time:
consumers dedupe on `event_id` (also a message header). A row the brokers did not take stays
unpublished with its error and attempt count, and the batch loop stops (the caller backs off).

Order: within a topic, one subscription's events are in one partition, in outbox order.
After a failed delivery a later event of the same subscription may already be out; every
event carries `sequence` (the outbox id, increasing per subscription) to reorder by.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from anubis_dagster.core.masking import mask_text
from anubis_dagster.db import outbox
from anubis_dagster.db.models import OutboxEvent, utcnow
from anubis_dagster.db.session import session_scope
from anubis_dagster.settings import Settings

log = logging.getLogger("anubis.events")


def producer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings from the environment's: idempotent (acks=all, ordered retries),
    messages that cannot be delivered fail after the delivery timeout (and stay in the
    outbox) instead of waiting in memory for ever."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.anubis_kafka_bootstrap_servers or "",
        "security.protocol": settings.anubis_kafka_security_protocol,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "retry.backoff.ms": 200,
        "retry.backoff.max.ms": 5000,
        "message.timeout.ms": int(settings.anubis_events_delivery_timeout_seconds * 1000),
        "compression.type": "lz4",
        "client.id": "anubis-events",
        "log.connection.close": False,
    }
    if settings.anubis_kafka_sasl_mechanism:
        config["sasl.mechanism"] = settings.anubis_kafka_sasl_mechanism
    if settings.anubis_kafka_sasl_username:
        config["sasl.username"] = settings.anubis_kafka_sasl_username
    if settings.anubis_kafka_sasl_password is not None:
        config["sasl.password"] = settings.anubis_kafka_sasl_password.get_secret_value()
    return config


def topic_for(template: str, event_type: str) -> str:
    return template.replace("{type}", event_type)


def message_value(row: OutboxEvent, integrations: dict[int, str]) -> dict[str, Any]:
    """The published event: the stored payload, the integration's key and the `sequence`."""
    value = dict(row.payload)
    value["integration"] = integrations.get(int(value["integration_id"]))
    value["sequence"] = int(row.id)
    return value


@dataclass
class PublishReport:
    published: int = 0
    failed: int = 0
    batches: int = 0
    pruned: int = 0
    errors: list[str] = field(default_factory=list)
    oldest_waiting: datetime | None = None
    waiting: int = 0

    def lag_seconds(self, now: datetime | None = None) -> float:
        if self.oldest_waiting is None:
            return 0.0
        return max(0.0, ((now or utcnow()) - self.oldest_waiting).total_seconds())


class OutboxPublisher:
    """Publishes the outbox of the app DB at `url` with `producer` (built from the settings
    by `from_settings`; tests hand their own). Plain Python: the sensor only calls `drain`."""

    def __init__(
        self,
        url: str,
        producer: Producer,
        *,
        topic_template: str,
        batch_size: int,
        delivery_timeout: float,
    ) -> None:
        self.url = url
        self.producer = producer
        self.topic_template = topic_template
        self.batch_size = batch_size
        self.delivery_timeout = delivery_timeout

    @classmethod
    def from_settings(cls, url: str, settings: Settings) -> OutboxPublisher:
        return cls(
            url,
            # librdkafka's own log (a broker unreachable…) through Python's, not raw stderr
            Producer(producer_config(settings), logger=log),
            topic_template=settings.anubis_events_topic_template,
            batch_size=settings.anubis_events_batch_size,
            delivery_timeout=settings.anubis_events_delivery_timeout_seconds,
        )

    def publish_batch(self) -> tuple[int, int, list[str]]:
        """One batch: (published, failed, the brokers' errors). (0, 0, []) = nothing waits."""
        with session_scope(self.url) as session:
            rows = outbox.pending(session, self.batch_size)
            integrations = outbox.integration_keys(session) if rows else {}
        if not rows:
            return 0, 0, []
        delivered: list[int] = []
        failed: dict[int, str] = {}

        def on_delivery(row_id: int) -> Callable[[KafkaError | None, Message], None]:
            def report(error: KafkaError | None, _message: Message) -> None:
                if error is None:
                    delivered.append(row_id)
                else:
                    failed[row_id] = str(error)

            return report

        for row in rows:
            value = json.dumps(message_value(row, integrations), separators=(",", ":"))
            while True:
                try:
                    self.producer.produce(
                        topic_for(self.topic_template, row.event_type),
                        key=str(row.subscription_id).encode(),
                        value=value.encode(),
                        headers={
                            "event_id": row.event_id.encode(),
                            "event_type": row.event_type.encode(),
                            "schema_version": str(row.payload.get("schema_version", 1)).encode(),
                        },
                        on_delivery=on_delivery(row.id),
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    self.producer.poll(0.1)
            self.producer.poll(0)
        remaining = self.producer.flush(self.delivery_timeout)
        if remaining:
            # not acknowledged in time: dropped here, they stay in the outbox for the next try
            self.producer.purge()
            self.producer.flush(1.0)
        for row in rows:
            if row.id not in failed and row.id not in delivered:
                failed[row.id] = "not acknowledged within the delivery timeout"
        with session_scope(self.url) as session:
            outbox.mark_published(session, delivered)
            errors = sorted(set(failed.values()))
            if failed:
                outbox.record_failure(session, list(failed), "; ".join(errors))
        return len(delivered), len(failed), [mask_text(e) for e in errors]

    def drain(self, *, max_batches: int, deadline: float | None = None) -> PublishReport:
        """Batches until the outbox is empty, a batch fails (the caller backs off), or
        `max_batches` or the monotonic `deadline` is reached."""
        report = PublishReport()
        for _ in range(max_batches):
            if deadline is not None and time.monotonic() >= deadline:
                break
            published, failed, errors = self.publish_batch()
            if not published and not failed:
                break
            report.batches += 1
            report.published += published
            report.failed += failed
            report.errors.extend(errors)
            log.info("events: %d published, %d failed", published, failed)
            if failed:
                break
        self.measure(report)
        return report

    def measure(self, report: PublishReport) -> None:
        with session_scope(self.url) as session:
            report.oldest_waiting = outbox.oldest_unpublished(session)
            report.waiting = outbox.unpublished_count(session)


def prune(url: str, *, retention_days: int, published_only: bool, limit: int = 10_000) -> int:
    """Delete events past the retention (bounded per call: a backlog goes over several)."""
    before = utcnow() - timedelta(days=retention_days)
    with session_scope(url) as session:
        return outbox.prune(session, before=before, limit=limit, published_only=published_only)


def backoff_seconds(failures: int, *, base: float = 30.0, ceiling: float = 900.0) -> float:
    """How long the publisher waits after `failures` failed ticks in a row: 30 s, 60 s, 120 s…
    up to 15 min (the brokers are down: no point hammering them every tick)."""
    if failures <= 0:
        return 0.0
    return float(min(ceiling, base * 2 ** (failures - 1)))
