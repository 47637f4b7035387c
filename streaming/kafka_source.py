"""The Kafka source: a portable Splittable DoFn reading ``player-telemetry`` in batches.

One restriction per partition (an unbounded offset range starting at the stream group's
committed offset); each call polls a batch, validates it with the contract code, emits it as one
element and defers the remainder. A manual watermark estimator tracks the contract's watermark:
the highest event time seen in the partition minus the out-of-orderness bound; a partition with
no message for the idle timeout (and nothing left unread) follows the wall clock instead, so it
never holds the job back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from betlake.config import Settings
from betlake.contract import RawBatch, Validated, epoch_us, validate
from betlake.kafka import committed_offsets, consume, end_offset, stream_consumer
from streaming.windows import arrived_too_late, watermark_ceiling

END_OF_PARTITION = 2**63 - 1


@dataclass(frozen=True)
class PartitionRead:
    """One poll of one partition: its offsets, and the validated messages, each event flagged
    ``arrived_late`` by the partition's watermark when it arrived."""

    partition: int
    first_offset: int
    next_offset: int
    validated: Validated
    watermark_us: int | None
    ceiling_us: int | None  # the watermark may not pass this yet (see watermark_ceiling)


class PartitionWatermark:
    """The watermark of one partition: max event time minus the out-of-orderness bound, or the
    wall clock minus that bound once the partition has been idle (no message, nothing unread)
    for ``idle_timeout`` seconds."""

    def __init__(self, out_of_orderness_seconds: int, idle_timeout_seconds: int) -> None:
        self.bound_us = out_of_orderness_seconds * 1_000_000
        self.idle_timeout = idle_timeout_seconds
        self.max_event_us: int | None = None
        self.ceiling_us: int | None = None
        self.last_message = time.monotonic()

    def observe(self, max_event_us: int | None, now: float, ceiling_us: int | None) -> None:
        """A poll brought messages; ``max_event_us`` is their latest valid event time, and the
        watermark may not pass ``ceiling_us`` until the next poll."""
        self.last_message = now
        self.ceiling_us = ceiling_us
        if max_event_us is not None and (
            self.max_event_us is None or max_event_us > self.max_event_us
        ):
            self.max_event_us = max_event_us

    def idle_for(self, now: float) -> float:
        return now - self.last_message

    def value(self, now: float, wall_us: int) -> int | None:
        """The watermark now (None until anything is known)."""
        if self.idle_for(now) >= self.idle_timeout:
            return max(self.max_event_us or 0, wall_us) - self.bound_us
        if self.max_event_us is None:
            return None
        if self.ceiling_us is None:
            return self.max_event_us - self.bound_us
        return min(self.max_event_us - self.bound_us, self.ceiling_us)


class _InOrderTracker(OffsetRestrictionTracker):
    """An offset tracker that checkpoints but never splits: one reader per partition."""

    def try_split(self, fraction_of_remainder: float):
        return super().try_split(0) if fraction_of_remainder == 0 else None


_RESTRICTION = beam.DoFn.RestrictionParam()  # the DoFn is its own restriction provider
_WATERMARK = beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())


class ReadPartitionsFn(beam.DoFn, RestrictionProvider):
    """Partition numbers -> :class:`PartitionRead` batches, forever (or until idle, to drain).

    Each partition's restriction is its offset range from the committed offset on; it is never
    split, so one partition is read in order by one reader.
    """

    def __init__(
        self,
        settings: Settings,
        batch_size: int = 20_000,
        poll_seconds: float = 0.2,
        drain_when_idle: float | None = None,
    ) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.drain_when_idle = drain_when_idle

    def initial_restriction(self, partition: int) -> OffsetRange:
        topic = self.settings.telemetry_topic
        start = committed_offsets(self.settings, topic, [partition])[partition]
        return OffsetRange(start, END_OF_PARTITION)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return _InOrderTracker(restriction)

    def split(self, partition: int, restriction: OffsetRange):
        yield restriction

    def restriction_size(self, partition: int, restriction: OffsetRange) -> int:
        return 1

    def setup(self) -> None:
        self._consumers: dict[int, object] = {}
        self._positions: dict[int, int] = {}
        self._clocks: dict[int, PartitionWatermark] = {}
        self._unreachable: set[int] = set()  # partitions whose end Kafka did not say last time

    def teardown(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()

    def _consumer(self, partition: int, start: int):
        from confluent_kafka import TopicPartition

        consumer = self._consumers.get(partition)
        if consumer is None:
            consumer = self._consumers[partition] = stream_consumer(self.settings)
        if self._positions.get(partition) != start:
            consumer.assign([TopicPartition(self.settings.telemetry_topic, partition, start)])
            self._positions[partition] = start
        return consumer

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        partition: int,
        tracker=_RESTRICTION,
        estimator=_WATERMARK,
    ):
        settings = self.settings
        start = tracker.current_restriction().start
        consumer = self._consumer(partition, start)
        clock = self._clocks.setdefault(
            partition,
            PartitionWatermark(
                settings.max_out_of_orderness_seconds, settings.idle_timeout_seconds
            ),
        )
        polled = consume(consumer, settings, self.batch_size, self.poll_seconds)
        claimed = []
        for message in polled:
            if not tracker.try_claim(message.offset()):
                break
            claimed.append(message)
        now = time.monotonic()
        before = estimator.current_watermark()
        if claimed:
            self._positions[partition] = claimed[-1].offset() + 1
            read = self._validate(partition, claimed, before)
            latest_us = pc.max(read.validated.events.column("event_time")).value
            clock.observe(latest_us, now, read.ceiling_us)
            yield TimestampedValue(read, before or MIN_TIMESTAMP)
        elif clock.idle_for(now) >= self._idle_threshold() and self._lagging(consumer, partition):
            clock.observe(None, now, clock.ceiling_us)  # messages wait: not idle, just slow
        elif self.drain_when_idle is not None and clock.idle_for(now) >= self.drain_when_idle:
            tracker.try_claim(END_OF_PARTITION)  # the partition is done: the source may end
            return
        watermark = clock.value(now, epoch_us(datetime.now(UTC)))
        if watermark is not None and (before is None or watermark > before.micros):
            estimator.set_watermark(Timestamp(micros=watermark))
        tracker.defer_remainder(Duration(seconds=0 if claimed else self.poll_seconds))

    def _idle_threshold(self) -> float:
        return min(self.settings.idle_timeout_seconds, self.drain_when_idle or float("inf"))

    def _lagging(self, consumer, partition: int) -> bool:
        """Whether the partition holds messages past our position (then it is not idle). While
        Kafka is away, and once more when it is back (its producers need time to resend), the
        partition counts as lagging: were it idle, what they send would count as too late."""
        end = end_offset(consumer, self.settings, partition)
        if end is None:
            self._unreachable.add(partition)
            return True
        if partition in self._unreachable:
            self._unreachable.discard(partition)
            return True
        return end > self._positions[partition]

    def _validate(self, partition: int, messages: list, before: Timestamp | None) -> PartitionRead:
        topic = self.settings.telemetry_topic
        offsets = [m.offset() for m in messages]
        batch = RawBatch(
            payloads=[m.value() or b"" for m in messages],
            source="kafka",
            arrived_at=datetime.now(UTC),
            origins=[f"kafka:{topic}:{partition}:{offset}" for offset in offsets],
            kafka_partitions=[partition] * len(messages),
            kafka_offsets=offsets,
        )
        settings = self.settings
        validated = validate(
            batch,
            window_seconds=settings.window_seconds,
            max_clock_skew_seconds=settings.max_clock_skew_seconds,
        )
        watermark_us = None if before is None else before.micros
        events = validated.events
        starts = pc.cast(events.column("window_start"), pa.int64()).to_numpy()
        late = arrived_too_late(
            starts, watermark_us, settings.window_seconds, settings.allowed_lateness_seconds
        )
        flagged = events.set_column(
            events.schema.get_field_index("arrived_late"), "arrived_late", pa.array(late)
        )
        return PartitionRead(
            partition=partition,
            first_offset=offsets[0],
            next_offset=offsets[-1] + 1,
            validated=Validated(events=flagged, rejected=validated.rejected),
            watermark_us=watermark_us,
            ceiling_us=watermark_ceiling(
                starts[~late], settings.window_seconds, settings.allowed_lateness_seconds
            ),
        )


class ReadTelemetry(beam.PTransform):
    """The telemetry topic as a stream of validated :class:`PartitionRead` batches."""

    def __init__(self, settings: Settings, partitions: list[int], **read_options: object) -> None:
        super().__init__()
        self.settings = settings
        self.partitions = partitions
        self.read_options = read_options

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        return (
            pipeline
            | "Partitions" >> beam.Create(self.partitions)
            | "ReadPartitions"
            >> beam.ParDo(ReadPartitionsFn(self.settings, **self.read_options)).with_output_types(
                PartitionRead
            )
        )
