"""Kafka, in one place: client settings, topics, producing telemetry, publishing figures,
committing offsets. Every client is confluent-kafka (librdkafka).

The stream's clients wait out an outage of the broker: librdkafka reconnects by itself, its
errors meanwhile are logged (at WARNING, at most every few seconds), a flush or an offset commit
is retried until Kafka is back, and only a stop (``stopping``) makes them give up."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as ClientError
from confluent_kafka.admin import AdminClient, NewTopic

from betlake.core.config import BetlakeError, Settings

STREAM_GROUP = "betlake-stream"  # the consumer group whose committed offsets the stream resumes
RETRY_FOREVER = {"message.timeout.ms": 0}  # a producer option: deliver whenever Kafka is back
WAIT_LOG_SECONDS = 5.0
# errors of a commit that go away once the broker (the group's coordinator) is back
_TRANSIENT = frozenset({
    ClientError._WAIT_COORD, ClientError._TRANSPORT, ClientError._ALL_BROKERS_DOWN,
    ClientError._TIMED_OUT, ClientError.REQUEST_TIMED_OUT, ClientError.NOT_COORDINATOR,
    ClientError.COORDINATOR_NOT_AVAILABLE, ClientError.COORDINATOR_LOAD_IN_PROGRESS,
})  # fmt: skip

log = logging.getLogger("betlake.core.kafka")
_waits: dict[str, float] = {}
_waits_lock = threading.Lock()


class KafkaError(BetlakeError):
    """Kafka could not be reached or refused a request."""


def log_wait(bootstrap: str, why: object) -> None:
    """Log at WARNING that we wait for Kafka at ``bootstrap``, at most every few seconds."""
    now = time.monotonic()
    with _waits_lock:
        if now - _waits.get(bootstrap, float("-inf")) < WAIT_LOG_SECONDS:
            return
        _waits[bootstrap] = now
    if isinstance(why, ClientError):
        why = why.str()
    log.warning("waiting for Kafka at %s: %s", bootstrap, why)


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


class DeliveringProducer(Producer):
    """An idempotent producer that waits for every replica and records in ``failed`` why Kafka
    did not take a message (librdkafka retries each until its ``message.timeout.ms``)."""

    def __init__(self, settings: Settings, **extra: object) -> None:
        bootstrap = settings.kafka_bootstrap
        failed: list[ClientError] = []

        def report(error: ClientError | None, _: Message) -> None:
            if error is not None:
                failed.append(error)

        # the callbacks hold no reference to the producer: in a cycle, the garbage collector
        # would destroy it (a blocking librdkafka call) at any time, in any thread
        super().__init__(client_config(settings, acks="all", **{
            "enable.idempotence": True, "linger.ms": 20, "delivery.report.only.error": True,
            "on_delivery": report, "error_cb": lambda error: log_wait(bootstrap, error)},
            **extra))  # fmt: skip
        self.bootstrap, self.failed = bootstrap, failed

    def deliver(self, what: str, stopping: threading.Event | None = None) -> None:
        """Wait until Kafka has every message sent (saying so while it takes none); raise
        :class:`KafkaError` if one failed, or once ``stopping`` is set."""
        before = len(self)
        while left := self.flush(1.0):
            if stopping is not None and stopping.is_set():
                raise KafkaError(f"{left} {what} not delivered: the job is stopping")
            if left >= before:
                log_wait(self.bootstrap, f"{left} {what} not delivered yet")
            before = left
        if self.failed:
            failed = list(self.failed)
            self.failed.clear()
            raise KafkaError(f"{len(failed)} {what} were not delivered: {failed[0].str()}")


def producer(settings: Settings, **extra: object) -> DeliveringProducer:
    """An idempotent producer that waits for every replica (see :class:`DeliveringProducer`)."""
    return DeliveringProducer(settings, **extra)


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
    out.deliver(f"messages to {topic}")
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


def publish(
    out: DeliveringProducer,
    topic: str,
    rows: Iterable[dict],
    stopping: threading.Event | None = None,
) -> int:
    """Publish figures rows and wait until Kafka has them all (see
    :meth:`DeliveringProducer.deliver`); returns how many."""
    count = 0
    for row in rows:
        key, value = stats_message(row)
        out.produce(topic, key=key.encode(), value=value.encode())
        count += 1
    out.deliver(f"figures to {topic}", stopping)
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


READ_BATCH = 20_000  # messages a stream read takes at most


def stream_consumer(settings: Settings) -> Consumer:
    """A consumer of the stream's group, for assigned partitions (no group rebalancing); it logs
    trouble reaching Kafka (rate-limited) and reconnects by itself."""
    bootstrap = settings.kafka_bootstrap
    return Consumer(client_config(
        settings, **{"group.id": STREAM_GROUP, "enable.auto.commit": False,
                     "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
                     "enable.partition.eof": False, "fetch.wait.max.ms": 100,
                     # a reader's prefetch: two reads ahead, in fetches of up to 4 MiB, so
                     # that the next read is there when a read has stored this one (at one
                     # read ahead in 1 MiB fetches, a read waited on fetches for 45 % of its
                     # time); not librdkafka's 100,000 messages a partition (350-450 MiB of
                     # the job's peak over a backlog)
                     "queued.min.messages": 2 * READ_BATCH, "queued.max.messages.kbytes": 16_384,
                     "max.partition.fetch.bytes": 4 * 2**20,
                     "error_cb": lambda error: log_wait(bootstrap, error)}))  # fmt: skip


def consume(consumer: Consumer, settings: Settings, count: int, timeout: float) -> list[Message]:
    """Up to ``count`` messages; an error among them (Kafka away, a partition moving) is logged
    (rate-limited) and skipped, as the consumer retries by itself; a fatal one raises."""
    polled = consumer.consume(count, timeout)
    if not any(map(Message.error, polled)):  # the usual case, without a loop in Python
        return polled
    messages = []
    for message in polled:
        error = message.error()
        if error is None:
            messages.append(message)
        elif error.fatal():
            raise KafkaError(f"the consumer failed: {error.str()}")
        else:
            log_wait(settings.kafka_bootstrap, error)
    return messages


def end_offsets(
    consumer: Consumer, settings: Settings, partitions: list[int]
) -> dict[int, int] | None:
    """The telemetry partitions' end offsets now, or None while Kafka does not answer."""
    try:
        return {
            p: consumer.get_watermark_offsets(
                TopicPartition(settings.telemetry_topic, p), timeout=5, cached=False
            )[1]
            for p in partitions
        }
    except KafkaException as error:
        log_wait(settings.kafka_bootstrap, f"end offsets unknown: {error}")
        return None


class Committed(NamedTuple):
    """A partition's committed position: the next offset to read, and the partition's
    watermark when that offset was read (kept in the commit's metadata; None if unknown)."""

    offset: int
    watermark_us: int | None = None


def committed_offsets(
    settings: Settings, topic: str, partitions: list[int]
) -> dict[int, Committed]:
    """Where the stream resumes in each partition: its committed position, else the earliest
    offset (watermark unknown)."""
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
            if tp.offset >= 0:
                watermark = json.loads(tp.metadata or "{}").get("watermark_us")
                starts[tp.partition] = Committed(tp.offset, watermark)
            else:
                low, _ = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), 10)
                starts[tp.partition] = Committed(low)
        return starts
    finally:
        consumer.close()


def commit(
    consumer: Consumer,
    settings: Settings,
    positions: dict[int, Committed],
    stopping: threading.Event,
) -> None:
    """Commit the stream group's next telemetry offsets (synchronously), retrying while Kafka is
    away (committing later is always safe); raise :class:`KafkaError` if Kafka refuses them, or
    once ``stopping`` is set."""
    topic = settings.telemetry_topic
    partitions = [
        TopicPartition(topic, p, c.offset, metadata=json.dumps({"watermark_us": c.watermark_us}))
        for p, c in positions.items()
    ]
    while True:
        try:
            consumer.commit(offsets=partitions, asynchronous=False)
            return
        except KafkaException as exc:
            error = exc.args[0]
            if not (error.retriable() or error.code() in _TRANSIENT):
                raise KafkaError(f"cannot commit offsets of {topic}: {error.str()}") from None
            log_wait(settings.kafka_bootstrap, f"offsets of {topic} not committed: {error.str()}")
            if stopping.wait(1):
                raise KafkaError(f"offsets of {topic} not committed: the job is stopping") from None
