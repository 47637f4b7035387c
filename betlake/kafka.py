"""Kafka, in one place: client settings, topics, producing telemetry, publishing figures,
committing offsets. Every client is confluent-kafka (librdkafka)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from betlake.config import BetlakeError, Settings

STREAM_GROUP = "betlake-stream"  # the consumer group whose committed offsets the stream resumes


class KafkaError(BetlakeError):
    """Kafka could not be reached or refused a request."""


def client_config(settings: Settings, **extra: object) -> dict[str, object]:
    """librdkafka settings: the bootstrap, pass-through security options, then ``extra``."""
    return {"bootstrap.servers": settings.kafka_bootstrap, **settings.kafka_options, **extra}


def ensure_topic(
    settings: Settings, topic: str, partitions: int = 4, compacted: bool = False
) -> int:
    """Create ``topic`` if it is missing; return its partition count."""
    admin = AdminClient(client_config(settings))
    existing = admin.list_topics(timeout=10).topics.get(topic)
    if existing is not None and not existing.error:
        return len(existing.partitions)
    config = {"cleanup.policy": "compact"} if compacted else {}
    future = admin.create_topics([NewTopic(topic, partitions, 1, config=config)])[topic]
    try:
        future.result(timeout=30)
    except KafkaException as error:
        if "TOPIC_ALREADY_EXISTS" not in str(error):
            raise KafkaError(f"cannot create topic {topic}: {error}") from None
    return partitions


def partitions_of(settings: Settings, topic: str) -> list[int]:
    """The partition numbers of ``topic``."""
    try:
        metadata = AdminClient(client_config(settings)).list_topics(topic, timeout=10)
    except KafkaException as error:
        raise KafkaError(f"Kafka at {settings.kafka_bootstrap} did not answer: {error}") from None
    found = metadata.topics.get(topic)
    if found is None or found.error:
        raise KafkaError(f"topic {topic} does not exist on {settings.kafka_bootstrap}")
    return sorted(found.partitions)


def producer(settings: Settings, **extra: object) -> Producer:
    """An idempotent producer that waits for every replica."""
    return Producer(
        client_config(
            settings, acks="all", **{"enable.idempotence": True, "linger.ms": 20}, **extra
        )
    )


def keep_pace(sent: int, rate: float | None, began: float) -> None:
    """Sleep so that ``sent`` messages since ``began`` (monotonic) go at most ``rate`` a second."""
    if rate:
        ahead = sent / rate - (time.monotonic() - began)
        if ahead > 0:
            time.sleep(ahead)


def produce(
    settings: Settings,
    topic: str,
    messages: Iterable[tuple[str | None, str | bytes]],
    rate: float | None = None,
) -> Iterator[int]:
    """Send (key, value) messages, at most ``rate`` a second; yields the running count. A str
    value is sent as UTF-8, a bytes value exactly as it is (a bad message too)."""
    out = producer(settings)
    began, sent = time.monotonic(), 0
    for key, value in messages:
        data = value if isinstance(value, bytes) else value.encode()
        while True:
            try:
                out.produce(topic, value=data, key=key.encode() if key else None)
                break
            except BufferError:
                out.poll(0.05)
        sent += 1
        if sent % 1000 == 0:
            out.poll(0)
            yield sent
            keep_pace(sent, rate, began)
    if out.flush(60):
        raise KafkaError(f"{len(out)} messages were not delivered to {topic}")
    yield sent


def stats_message(row: dict) -> tuple[str, str]:
    """The ``bet-site-stats`` message of a site_window_stats row: (key, JSON value)."""

    def plain(value: object) -> object:
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z")
        if isinstance(value, Decimal):
            return f"{value:.2f}"
        return value

    value = {name: plain(v) for name, v in row.items() if name != "window_date"}
    return f"{row['site_id']}|{value['window_start']}", json.dumps(value)


def publish(out: Producer, topic: str, rows: Iterable[dict]) -> int:
    """Publish figures rows and wait until Kafka has them all; returns how many."""
    count = 0
    for row in rows:
        key, value = stats_message(row)
        out.produce(topic, key=key.encode(), value=value.encode())
        count += 1
    if out.flush(30):
        raise KafkaError(f"{len(out)} figures were not delivered to {topic}")
    return count


def reachable(settings: Settings, timeout: float = 1) -> bool:
    """Whether a bootstrap server accepts connections (a refused port answers at once)."""
    for server in settings.kafka_bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except (OSError, ValueError):
            continue
        return True
    return False


_NOT_FIGURES = ("pane", "computed_at", "window_date")


def publish_corrections(settings: Settings, before: list[dict], after: list[dict]) -> int:
    """Publish the rows of ``after`` whose figures differ from ``before`` (what the topic last
    got for those keys), and a tombstone for each key that disappeared; returns how many."""

    def keyed(rows: list[dict]) -> dict[str, dict]:
        return {stats_message(row)[0]: row for row in rows}

    def figures(row: dict) -> dict:
        return {k: v for k, v in row.items() if k not in _NOT_FIGURES}

    old, new = keyed(before), keyed(after)
    changed = [row for key, row in new.items() if key not in old or
               figures(old[key]) != figures(row)]  # fmt: skip
    gone = [key for key in old if key not in new]
    if not changed and not gone:
        return 0
    ensure_topic(settings, settings.stats_topic, compacted=True)
    out = producer(settings)
    for key in gone:
        out.produce(settings.stats_topic, key=key.encode(), value=None)
    return publish(out, settings.stats_topic, changed) + len(gone)


def stream_consumer(settings: Settings) -> Consumer:
    """A consumer of the stream's group, for assigned partitions (no group rebalancing)."""
    return Consumer(client_config(
        settings, **{"group.id": STREAM_GROUP, "enable.auto.commit": False,
                     "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
                     "enable.partition.eof": False, "fetch.wait.max.ms": 100}))  # fmt: skip


def committed_offsets(settings: Settings, topic: str, partitions: list[int]) -> dict[int, int]:
    """Where the stream resumes in each partition: its committed offset, else the earliest."""
    consumer = stream_consumer(settings)
    try:
        for attempt in range(30):  # a new broker takes a few seconds to elect the coordinator
            try:
                committed = consumer.committed([TopicPartition(topic, p) for p in partitions], 10)
                break
            except KafkaException as error:  # e.g. NOT_COORDINATOR while it is being elected
                if attempt == 29:
                    raise KafkaError(f"cannot read the committed offsets: {error}") from None
                time.sleep(1)
        starts = {}
        for tp in committed:
            low, _ = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), 10)
            starts[tp.partition] = tp.offset if tp.offset >= 0 else low
        return starts
    finally:
        consumer.close()


def end_offsets(settings: Settings, topic: str, partitions: list[int]) -> dict[int, int]:
    """The end offset (next offset to be written) of each partition."""
    consumer = stream_consumer(settings)
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10, cached=False)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def commit(consumer: Consumer, topic: str, offsets: dict[int, int]) -> None:
    """Commit the stream group's next offsets (synchronously)."""
    consumer.commit(
        offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
    )
