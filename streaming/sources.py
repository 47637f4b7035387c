"""The stream's source, one interface over three transports (``BETLAKE_SOURCE``).

A source reads batches with positions and a watermark per shard, validates them and stores them
in bronze (:class:`~streaming.kafka_source.ReadPartitionsFn`), and acknowledges positions only
once what they fed is durable. Everything
after it (validation, bronze, windows, gold, the stats topic) is the same for every transport:

* ``kafka``: :mod:`streaming.kafka_source`; its offsets are committed once the windows they fed
  are past their last pane and published (:class:`~streaming.sinks.CommitOffsetsFn`);
* ``nats`` (JetStream) and ``pubsub``: :mod:`streaming.acked_source`; a message is acknowledged
  once bronze holds it, and a restart rebuilds the open windows from bronze.
"""

from __future__ import annotations

import logging
from typing import Protocol

import apache_beam as beam

from betlake.core.config import BetlakeError, Settings
from betlake.core.kafka import committed_offsets, ensure_topic, partitions_of
from streaming.acked_source import ReadShards
from streaming.kafka_source import ReadTelemetry

log = logging.getLogger("betlake.stream")


class StreamSource(Protocol):
    """What the streaming job needs of a transport."""

    name: str
    commits_after_panes: bool  # acknowledged by CommitOffsetsFn once the panes are published

    def prepare(self) -> list[int]:
        """Create the topic (stream, subscription) if missing; returns the shards to read."""
        ...

    def read(self, shards: list[int], **options: object) -> beam.PTransform:
        """Pipeline -> a :class:`~streaming.kafka_source.StoredRead` per read of ``shards``: a
        read is in bronze (and, for an acknowledging source, acknowledged) before it is
        emitted."""
        ...

    def check_drained(self, metrics: dict[str, int]) -> None:
        """After a drained run: raise if it left messages unread."""
        ...


class KafkaSource:
    """Kafka: partitions, offsets committed after the panes they fed are published."""

    name = "kafka"
    commits_after_panes = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.starts: dict[int, int] = {}

    def prepare(self) -> list[int]:
        settings = self.settings
        ensure_topic(settings, settings.telemetry_topic)
        partitions = partitions_of(settings, settings.telemetry_topic)
        committed = committed_offsets(settings, settings.telemetry_topic, partitions)
        self.starts = {p: c.offset for p, c in committed.items()}
        return partitions

    def read(self, shards: list[int], **options: object) -> beam.PTransform:
        return ReadTelemetry(self.settings, shards, **options)

    def check_drained(self, metrics: dict[str, int]) -> None:
        from streaming.job import check_drained  # the Kafka check lives with the job

        check_drained(self.settings, self.starts, metrics)


class AcknowledgedSource:
    """NATS JetStream or Pub/Sub: messages acknowledged once bronze holds them."""

    commits_after_panes = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.source
        self.shards: list[int] = []

    def prepare(self) -> list[int]:
        if self.name == "nats":
            from betlake.core.nats import NatsClient

            client = NatsClient(self.settings)
            try:
                self.shards = client.ensure_stream()
            finally:
                client.close()
        else:
            from betlake.core.pubsub import ensure_subscription

            self.shards = ensure_subscription(self.settings)
        return self.shards

    def read(self, shards: list[int], **options: object) -> beam.PTransform:
        return ReadShards(self.settings, shards, **options)

    def check_drained(self, metrics: dict[str, int]) -> None:
        undrained = [s for s in self.shards if not metrics.get(f"drained_{s}")]
        if undrained:
            raise BetlakeError(f"the drained run did not drain shards {undrained}")
        read = ", ".join(f"{s}: {metrics.get(f'read_{s}', 0)} read" for s in self.shards)
        log.info("drained: every shard quiet with nothing unacknowledged (%s)", read)


def stream_source(settings: Settings) -> StreamSource:
    """The source ``BETLAKE_SOURCE`` names."""
    return KafkaSource(settings) if settings.source == "kafka" else AcknowledgedSource(settings)
