"""The Kafka source: a portable Splittable DoFn reading ``player-telemetry`` in batches.

One restriction per partition (an unbounded offset range starting at the stream group's
committed offset); each call polls a batch, validates it with the contract code, decides each
event's lateness once (:mod:`streaming.ledger`), makes it durable (the events bronze lacks to
``telemetry_raw``, rejected messages to ``telemetry_rejected``; a :class:`Compactor` keeps
both few-filed), emits what the figures take as one Arrow table with the stored offsets (a
:class:`StoredRead`), and defers the remainder.
Storing here, not in a step after the read, keeps the payloads (the bulk of a message) out of
the runner: only the figures' columns cross to the windows.

A manual watermark estimator tracks the contract's watermark: the highest event time seen in the
partition minus the out-of-orderness bound; a partition with no message for the idle
timeout (and nothing left unread) follows the wall clock instead, so it never holds the job back.

Why not Beam's ``ReadFromKafka``: in Python it is a cross-language transform that needs a Java
expansion service (a jar and a JVM per job), and its watermark comes from Kafka's record
timestamps, not from the event time inside the payload that the contract's windows are about.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.shared import Shared
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp
from confluent_kafka import Consumer, Message, TopicPartition

from betlake.core.config import Settings
from betlake.core.contract import (
    EVENT_COLUMNS,
    TELEMETRY_RAW,
    TELEMETRY_REJECTED,
    Origins,
    RawBatch,
    validate,
)
from betlake.core.kafka import (
    READ_BATCH,
    Committed,
    committed_offsets,
    consume,
    end_offsets,
    stream_consumer,
)
from betlake.core.lake import Compactor, Lake, Touched
from betlake.core.windowing import US, Windowing, epoch_us, whole_millis
from streaming.ledger import EventLedger
from streaming.metrics import PARTITION_METRICS, Tally

END_OF_PARTITION = 2**63 - 1
FIGURE_COLUMNS = [*EVENT_COLUMNS, "window_start"]  # no payload: it is the bulk of a row
PROGRESS = "progress"  # SplitStoredReadFn's second output: StoredOffsets per partition
log = logging.getLogger("betlake.stream")


@dataclass(frozen=True)
class PartitionRead:
    """One poll of one partition: its offsets, the events bronze lacks (``arrived_late`` decided
    for good), the on-time events the figures take now, and the rejected messages."""

    partition: int
    first_offset: int
    next_offset: int
    to_store: pa.Table  # telemetry_raw rows
    figures: pa.Table  # telemetry_raw's columns the windows need (FIGURE_COLUMNS)
    rejected: pa.Table  # telemetry_rejected rows
    events: int  # valid events read (duplicates included)
    too_late: int  # of which flagged arrived_late
    watermark_us: int | None


class StoredOffsets(NamedTuple):
    """One read made durable, for the offset commits: offsets [first, next) of a partition are
    in the lake, the windows they fed take events until ``open_until_us`` (event time, a whole
    millisecond: the commit timer's time, see :func:`whole_millis`), and
    the partition's watermark was ``watermark_us`` when they were read (-1: not known yet).
    Between the steps it travels as a plain tuple of ints (a deterministic coder)."""

    first_offset: int
    next_offset: int
    open_until_us: int
    watermark_us: int


class TopicEnds:
    """The topic's end offsets, polled at most once a second, and since when none has moved:
    the drain decision is for the whole topic, never for one partition alone."""

    def __init__(self, settings: Settings, partitions: list[int]) -> None:
        self.settings, self.partitions = settings, partitions
        self.ends: dict[int, int] | None = None
        self.moved = self.polled = time.monotonic()
        # Readers of several partitions poll at once: one waits for the other's answer. Given
        # the ends as they were while a poll was under way, with ``moved`` from the last poll
        # (none for as long as every read found messages), a reader took a busy topic for quiet.
        self.lock = threading.Lock()

    def poll(self, consumer, now: float) -> dict[int, int] | None:
        """The end offsets (None while Kafka does not answer: then nothing is quiet)."""
        with self.lock:
            if self.ends is not None and now - self.polled < 1:
                return self.ends
            self.polled = now
            ends = end_offsets(consumer, self.settings, self.partitions)
            if ends is None or ends != self.ends:
                self.moved = now
            self.ends = ends
            return ends

    def quiet_for(self, now: float) -> float:
        return now - self.moved


class PartitionWatermark:
    """The watermark of one partition: max event time minus the out-of-orderness bound, or the
    wall clock minus that bound once the partition has been idle (no message, nothing unread)
    for ``idle_timeout`` seconds."""

    def __init__(self, out_of_orderness_seconds: int, idle_timeout_seconds: int) -> None:
        self.bound_us = out_of_orderness_seconds * US
        self.idle_timeout = idle_timeout_seconds
        self.max_event_us: int | None = None
        self.last_message = time.monotonic()

    def observe(self, max_event_us: int | None, now: float) -> None:
        """A poll brought messages; ``max_event_us`` is their latest valid event time."""
        self.last_message = now
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
        return self.max_event_us - self.bound_us


class PartitionReads:
    """Where a worker's reads of each partition stand, shared by every instance of the reader
    the worker makes: the SDK harness makes another when bundles of the stage overlap, and a
    partition's next read may go to any of them. Per instance, a partition read by turns had
    its consumer re-assigned at each read (what it had fetched ahead dropped) and a clock that
    missed the other's reads: in the soak a second instance came after some minutes and the
    job's Python threads went from 0.38 to 0.63 cores.

    A partition is read by one thread at a time (:meth:`turn`). Its consumer is closed when
    the last instance using it is torn down."""

    def __init__(self, settings: Settings, partitions: list[int]) -> None:
        self.settings = settings
        self.consumers: dict[int, Consumer] = {}
        self.positions: dict[int, int] = {}  # the next offset each consumer will deliver
        self.clocks: dict[int, PartitionWatermark] = {}
        self.ends = TopicEnds(settings, partitions)
        self.turns = {partition: threading.Lock() for partition in partitions}
        self.lock = threading.Lock()
        self.users = 0
        self.closing = False

    def attach(self) -> None:
        with self.lock:
            self.users += 1
            self.closing = False

    def detach(self) -> None:
        """An instance is torn down; the last one closes the consumers (a read still running
        on another thread then ends quietly)."""
        with self.lock:
            self.users -= 1
            if self.users:
                return
            self.closing = True
            consumers, self.consumers, self.positions = self.consumers, {}, {}
        for consumer in consumers.values():
            consumer.close()

    def consumer(self, partition: int, start: int) -> Consumer:
        """The partition's consumer, delivering from ``start`` next."""
        with self.lock:
            consumer = self.consumers.get(partition)
            if consumer is None:
                consumer = self.consumers[partition] = stream_consumer(self.settings)
        if self.positions.get(partition) != start:
            consumer.assign([TopicPartition(self.settings.telemetry_topic, partition, start)])
            self.positions[partition] = start
        return consumer

    def turn(self, partition: int) -> threading.Lock:
        """Held for each read of the partition. A runner may split its restriction while a
        read polls (a checkpoint): the residual's first read may start at once, on another
        thread, and must wait until the read it split has returned (and so has noted that the
        consumer is past the residual's start), or it polls from where that read left off."""
        return self.turns[partition]

    def clock(self, partition: int) -> PartitionWatermark:
        settings = self.settings
        with self.lock:
            if partition not in self.clocks:
                self.clocks[partition] = PartitionWatermark(
                    settings.max_out_of_orderness_seconds, settings.idle_timeout_seconds
                )
            return self.clocks[partition]


@dataclass(frozen=True)
class _Decided:
    read: PartitionRead
    latest_event_us: int | None  # the read's latest valid event time, for the watermark


class _InOrderTracker(OffsetRestrictionTracker):
    """An offset tracker that checkpoints but never splits: one reader per partition."""

    def try_split(self, fraction_of_remainder: float):
        return super().try_split(0) if fraction_of_remainder == 0 else None


@dataclass(frozen=True)
class StoredRead:
    """A read once bronze holds it: the events the figures take now (``FIGURE_COLUMNS``) and
    where it was, for the offset commits."""

    partition: int
    figures: pa.Table
    offsets: StoredOffsets


class SplitStoredReadFn(beam.DoFn):
    """A :class:`StoredRead` -> its figures (if any), and ``(partition, StoredOffsets)`` on the
    progress output, both at the read's timestamp."""

    def process(self, stored: StoredRead):
        if stored.figures.num_rows:
            yield stored.figures
        yield TaggedOutput(PROGRESS, (stored.partition, tuple(stored.offsets)))


# The DoFn is its own restriction and watermark estimator provider.
_RESTRICTION = beam.DoFn.RestrictionParam()
_WATERMARK = beam.DoFn.WatermarkEstimatorParam()


class ReadPartitionsFn(beam.DoFn, RestrictionProvider, WatermarkEstimatorProvider):
    """Partition numbers -> a :class:`StoredRead` per read, once bronze holds it (its figures:
    the on-time events not counted yet); forever (or until idle, to drain).

    Each partition's restriction is its offset range from the committed offset on; it is never
    split, so one partition is read in order by one reader. Its watermark starts where it was
    when the committed offset was read (kept with the commit), so a restarted job judges the
    events that waited in Kafka as the stopped one would have, not as all on time.
    """

    def __init__(
        self,
        settings: Settings,
        partitions: list[int],
        batch_size: int = READ_BATCH,
        poll_seconds: float = 0.2,
        drain_when_idle: float | None = None,
    ) -> None:
        self.settings = settings
        self.windowing = Windowing.of(settings)
        self.partitions = partitions
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.drain_when_idle = drain_when_idle
        self._starts: dict[int, Committed] | None = None  # where each partition resumes
        self.reads_handle = Shared()  # for every reader of a worker: where reads stand
        self.lake_handle = Shared()  # one lake (see Lake.held)
        self.ledger_handle = Shared()  # one ledger
        self.compactor_handle = Shared()  # and one compactor of the tables they append to

    def initial_restriction(self, partition: int) -> OffsetRange:
        start = self._committed(partition).offset
        return OffsetRange(start, END_OF_PARTITION)

    def initial_estimator_state(self, partition: int, restriction: OffsetRange):
        watermark_us = self._committed(partition).watermark_us
        return None if watermark_us is None else Timestamp(micros=watermark_us)

    def create_watermark_estimator(self, state: Timestamp | None) -> ManualWatermarkEstimator:
        return ManualWatermarkEstimator(state)

    def _committed(self, partition: int) -> Committed:
        """Where the partition resumes. Every partition's offsets are read at the first call:
        a read is a consumer and a round trip to Kafka, and the job's start makes two calls a
        partition."""
        if self._starts is None:
            topic = self.settings.telemetry_topic
            self._starts = committed_offsets(self.settings, topic, self.partitions)
        return self._starts[partition]

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return _InOrderTracker(restriction)

    def split(self, partition: int, restriction: OffsetRange):
        yield restriction

    def restriction_size(self, partition: int, restriction: OffsetRange) -> int:
        return 1

    def setup(self) -> None:
        self._open_stores()
        self._reads.attach()

    def _open_stores(self) -> None:
        """What a reader shares with the worker's others (where reads stand, the lake, the
        ledger, the compactor), and a tally."""
        self._reads = self.reads_handle.acquire(
            lambda: PartitionReads(self.settings, self.partitions)
        )
        self._lake = self.lake_handle.acquire(lambda: Lake.of(self.settings))
        self._ledger = self.ledger_handle.acquire(self._new_ledger)
        self._compactor = self.compactor_handle.acquire(lambda: Compactor(Lake.of(self.settings)))
        self._tally = Tally("telemetry")

    def _new_ledger(self) -> EventLedger:
        lake = self._lake

        def bronze(starts: list[int]) -> pa.Table:
            window_start = pa.array(starts, pa.int64()).cast(TELEMETRY_RAW.schema.field(
                "window_start").type)  # fmt: skip
            dates = pc.unique(pc.cast(window_start, pa.date32()))
            touched = Touched({"event_date": dates, "window_start": window_start})
            columns = ["event_id", "window_start", "arrived_late"]
            return lake.scan(TELEMETRY_RAW, columns, touched.rows(), touched.files())

        return EventLedger(bronze, self.partitions, self.windowing)

    def teardown(self) -> None:
        self._reads.detach()

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        partition: int,
        tracker=_RESTRICTION,
        estimator=_WATERMARK,
    ):
        with self._reads.turn(partition):
            stored = self._read(partition, tracker, estimator)
        if stored is not None:
            yield stored

    def _read(self, partition: int, tracker, estimator) -> TimestampedValue | None:
        """One read of the partition: what it outputs once bronze holds it, if anything."""
        reads = self._reads
        start = tracker.current_restriction().start
        consumer = reads.consumer(partition, start)
        clock = reads.clock(partition)
        try:
            polled = consume(consumer, self.settings, self.batch_size, self.poll_seconds)
        except RuntimeError:  # "Consumer closed": the worker shuts down under this read
            if reads.closing:
                return None
            raise
        # One claim a read, of its last offset, which claims every offset before it (a claim a
        # message took 5 % of the job's time holding the GIL).
        if polled and not tracker.try_claim(polled[-1].offset()):
            # The runner split the restriction before the claim (a checkpoint, Dataflow's are
            # periodic; the tracker splits nowhere else): what was polled is the residual's,
            # and the consumer is past it; the residual's first read re-assigns it.
            reads.positions.pop(partition, None)
            return None
        now = time.monotonic()
        if polled and self.drain_when_idle is not None:
            # a drain's quiet is timed from the first read on: known only once a read found
            # nothing, the ends made a run over a backlog wait the whole quiet after reading it
            reads.ends.poll(consumer, now)
        before = estimator.current_watermark()
        stored = None
        if polled:
            reads.positions[partition] = polled[-1].offset() + 1
            beam.metrics.Metrics.counter(PARTITION_METRICS, f"read_{partition}").inc(len(polled))
            decided = self._validate(partition, polled, before)
            clock.observe(decided.latest_event_us, now)
            self._store(decided.read)
            stored = self._stored(decided.read, before or MIN_TIMESTAMP)
        else:
            ends = reads.ends.poll(consumer, now)
            behind = ends is None or ends[partition] > reads.positions[partition]
            if behind and clock.idle_for(now) >= self.settings.idle_timeout_seconds:
                clock.observe(None, now)  # messages wait: not idle, just slow
            elif self._drained(behind, now):
                log.info("partition %d read to its end offset %d; the topic is quiet: drained",
                         partition, reads.positions[partition])  # fmt: skip
                beam.metrics.Metrics.counter(PARTITION_METRICS, f"drained_end_{partition}").inc(
                    reads.positions[partition]
                )
                tracker.try_claim(END_OF_PARTITION)  # the partition is done: the source may end
                return None
        watermark = clock.value(now, epoch_us(datetime.now(UTC)))
        if watermark is not None and (before is None or watermark > before.micros):
            estimator.set_watermark(Timestamp(micros=watermark))
            self._ledger.advance(partition, watermark)
        tracker.defer_remainder(Duration(seconds=0 if polled else self.poll_seconds))
        return stored

    def _store(self, read: PartitionRead) -> None:
        """Make the read durable: its rejected messages (keyed by origin) and the events bronze
        lacks, with the lateness the ledger decided."""
        self._store_rejected(read)
        self._lake.append(TELEMETRY_RAW, read.to_store)
        self._compactor.wrote(TELEMETRY_REJECTED, read.rejected)
        self._compactor.wrote(TELEMETRY_RAW, read.to_store)
        self._tally.add(
            messages_in=read.next_offset - read.first_offset,
            events_in=read.events,
            rejected=read.rejected.num_rows,
            too_late=read.too_late,
        )

    def _store_rejected(self, read: PartitionRead) -> None:
        """Rejected messages are keyed by their offset, and each append records the highest
        offset of the partition stored so far in the same commit (:meth:`Lake.progress`): a
        read past it is new as a whole and appended without a lookup; a re-read (a restart, a
        bundle retried on any worker) is matched against the table first."""
        if not read.rejected.num_rows:
            return
        writer = f"betlake-stream:{self.settings.telemetry_topic}:{read.partition}"
        through = self._lake.progress(TELEMETRY_REJECTED, writer)
        rows = read.rejected
        if through is None or read.first_offset <= through:
            rows = self._lake.unseen(TELEMETRY_REJECTED, rows)
        self._lake.append(
            TELEMETRY_REJECTED, rows, progress=(writer, max(through or -1, read.next_offset - 1))
        )

    def _stored(self, read: PartitionRead, at: Timestamp) -> TimestampedValue:
        """What the job takes of a stored read: its figures and :class:`StoredOffsets`."""
        open_until = at.micros
        if read.figures.num_rows:
            last_start = pc.max(pc.cast(read.figures.column("window_start"), pa.int64())).as_py()
            open_until = max(open_until, self.windowing.commit_after_us(last_start))
        watermark = -1 if read.watermark_us is None else read.watermark_us
        stored = StoredOffsets(
            read.first_offset, read.next_offset, whole_millis(open_until), watermark
        )
        return TimestampedValue(StoredRead(read.partition, read.figures, stored), at)

    def _drained(self, behind: bool, now: float) -> bool:
        """Whether this partition may end a drained run: it is read to its end offset, and no
        partition of the topic has received a message for ``drain_when_idle`` seconds."""
        return (
            self.drain_when_idle is not None
            and not behind
            and self._reads.ends.quiet_for(now) >= self.drain_when_idle
        )

    def _raw_batch(self, partition: int, messages: list) -> tuple[RawBatch, list[int]]:
        """The messages as a contract batch, and their positions (offsets)."""
        topic = self.settings.telemetry_topic
        offsets = list(map(Message.offset, messages))
        payloads = list(map(Message.value, messages))
        if None in payloads:  # a tombstone (no value): an empty message, rejected as such
            payloads = [value or b"" for value in payloads]
        batch = RawBatch(
            payloads=payloads,
            source="kafka",
            arrived_at=datetime.now(UTC),
            origins=Origins(f"kafka:{topic}:{partition}:", offsets),
            kafka_partitions=[partition] * len(messages),
            kafka_offsets=offsets,
        )
        return batch, offsets

    def _validate(self, partition: int, messages: list, before: Timestamp | None) -> _Decided:
        batch, offsets = self._raw_batch(partition, messages)
        settings = self.settings
        validated = validate(
            batch,
            window_seconds=settings.window_seconds,
            max_clock_skew_seconds=settings.max_clock_skew_seconds,
        )
        watermark_us = None if before is None else before.micros
        events = validated.events
        starts = pc.cast(events.column("window_start"), pa.int64()).to_numpy()
        windowing = self.windowing
        times = pc.cast(events.column("event_time"), pa.int64()).to_numpy()
        by_watermark = windowing.too_late(starts, windowing.arrival_watermarks(times, watermark_us))
        decision = self._ledger.decide(events.column("event_id"), starts, by_watermark)
        flagged = events.set_column(
            events.schema.get_field_index("arrived_late"), "arrived_late", pa.array(decision.late)
        )
        read = PartitionRead(
            partition=partition,
            first_offset=offsets[0],
            next_offset=offsets[-1] + 1,
            to_store=flagged.filter(decision.store),
            figures=flagged.select(FIGURE_COLUMNS).filter(decision.count),
            rejected=validated.rejected,
            events=events.num_rows,
            too_late=int(decision.late.sum()),
            watermark_us=watermark_us,
        )
        latest = pc.max(events.column("event_time")).value if events.num_rows else None
        return _Decided(read, latest)


class ReadTelemetry(beam.PTransform):
    """The telemetry topic, validated and stored: a :class:`StoredRead` per read."""

    def __init__(self, settings: Settings, partitions: list[int], **read_options: object) -> None:
        super().__init__()
        self.settings = settings
        self.windowing = Windowing.of(settings)
        self.partitions = partitions
        self.read_options = read_options

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        return (
            pipeline
            | "Partitions" >> beam.Create(self.partitions)
            | "ReadPartitions"
            >> beam.ParDo(
                ReadPartitionsFn(self.settings, self.partitions, **self.read_options)
            ).with_output_types(StoredRead)
        )
