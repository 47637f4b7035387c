"""Reading a Kafka topic back, for the tests and the benchmarks."""

from __future__ import annotations

import json
import time

from confluent_kafka import Consumer, TopicPartition

from betlake.core.config import Settings
from betlake.core.kafka import KafkaError, client_config, partitions_of


def read_topic(
    settings: Settings, topic: str, timeout: float = 60
) -> list[tuple[str, dict | None, float]]:
    """Every message of ``topic`` from the start to its current end: (key, JSON value or None
    for a tombstone, broker timestamp in seconds), in partition order."""
    consumer = Consumer(client_config(
        settings, **{"group.id": f"betlake-reader-{time.time_ns()}", "enable.auto.commit": False,
                     "auto.offset.reset": "earliest"}))  # fmt: skip
    try:
        ends = {}
        for partition in partitions_of(settings, topic):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        messages: list[tuple[str, dict | None, float]] = []
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error():
                    continue
                value = message.value()
                messages.append((
                    message.key().decode(), None if value is None else json.loads(value),
                    message.timestamp()[1] / 1000,
                ))  # fmt: skip
                if message.offset() + 1 >= ends.get(message.partition(), 0):
                    ends.pop(message.partition(), None)
        if ends:
            raise KafkaError(f"timed out reading {topic} to its end")
        return messages
    finally:
        consumer.close()


def read_latest(settings: Settings, topic: str, timeout: float = 60) -> dict[str, dict]:
    """The latest JSON value per key of ``topic`` (what a compacted topic's reader holds)."""
    latest: dict[str, dict] = {}
    for key, value, _ in read_topic(settings, topic, timeout):
        if value is None:  # a tombstone: the row is gone
            latest.pop(key, None)
        else:
            latest[key] = value
    return latest
