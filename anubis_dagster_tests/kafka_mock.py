"""librdkafka's built-in mock cluster as a real Kafka protocol endpoint for the tests.

A handle created with `test.mock.num.brokers` starts brokers in-process that listen on
127.0.0.1 and speak the Kafka protocol; any other client reaches them over TCP with their
address as `bootstrap.servers` (found from the cluster's metadata). The cluster lives as long
as its owning handle: `close()` drops it (the brokers go away, as a broker outage would).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition


class MockKafka:
    def __init__(self, brokers: int = 1) -> None:
        self._owner: Producer | None = Producer({"test.mock.num.brokers": brokers, "log_level": 3})
        metadata = self._owner.list_topics(timeout=10)
        self.bootstrap = ",".join(f"{b.host}:{b.port}" for b in metadata.brokers.values())
        assert self.bootstrap.startswith("127.0.0.1:")

    def close(self) -> None:
        self._owner = None

    def read(
        self, topics: list[str], *, expect: int, timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """Every message of `topics` from the beginning (waits for at least `expect`, then
        for a quiet second, so an extra duplicate is seen), in each partition's order: a
        separate consumer over TCP, assigned to every partition (no group rebalance)."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"test-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "log_level": 3,
            }
        )
        try:
            partitions = []
            for topic in topics:
                metadata = consumer.list_topics(topic, timeout=10).topics[topic]
                partitions += [
                    TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions
                ]
            consumer.assign(partitions)
            messages: list[dict[str, Any]] = []
            end = time.monotonic() + timeout
            quiet_until: float | None = None
            while time.monotonic() < end:
                message = consumer.poll(0.2)
                if message is None:
                    if len(messages) >= expect:
                        quiet_until = quiet_until or time.monotonic() + 1.0
                        if time.monotonic() >= quiet_until:
                            break
                    continue
                if message.error():
                    continue
                quiet_until = None
                messages.append(
                    {
                        "topic": message.topic(),
                        "partition": message.partition(),
                        "key": (message.key() or b"").decode(),
                        "headers": {k: v.decode() for k, v in (message.headers() or [])},
                        "value": json.loads(message.value() or b"null"),
                    }
                )
            return messages
        finally:
            consumer.close()


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
