"""The NATS JetStream and Pub/Sub sources: read, make bronze hold it, acknowledge.

A Pub/Sub ack deadline (10 minutes at most) is shorter than a window's life, so these sources
never hold acks until windows close, as the Kafka source holds its offset commits: bronze is the
record. :class:`ReadShardsFn` pulls a batch of a shard, validates it, decides each event's
lateness and stores it exactly as the Kafka reader does (it is that reader with another
transport under it), and then acknowledges its messages.
A message whose ack is lost comes again and is a duplicate bronze absorbs (lateness decided
once, :mod:`streaming.ledger`).

A restarted job does not re-read the transport for the windows still open. Each shard's reader
starts from bronze instead: its watermark is bronze's latest event time of that shard minus the
out-of-orderness bound, and its first output is bronze's on-time events of the windows that
watermark has not closed (or closed less than a window ago), so those windows' figures are
whole again before new messages count.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from betlake.core.config import Settings
from betlake.core.contract import TELEMETRY_RAW, TELEMETRY_REJECTED, TIMESTAMP, RawBatch
from betlake.core.lake import Lake
from betlake.core.transport import Delivery
from betlake.core.windowing import US, Windowing, epoch_us
from streaming.kafka_source import (
    _RESTRICTION,
    _WATERMARK,
    END_OF_PARTITION,
    PartitionRead,
    PartitionWatermark,
    ReadPartitionsFn,
    StoredRead,
)
from streaming.metrics import PARTITION_METRICS

log = logging.getLogger("betlake.stream")
RESTORE_DAYS = 2  # bronze's event dates a restart looks at (today and the days before it)
DEADLINE_MARGIN_SECONDS = 5  # a drain without a known backlog waits the ack deadline and this


_clients: dict[tuple[str, ...], object] = {}
_clients_lock = threading.Lock()


def shared_client(settings: Settings):
    """The worker's one client of the configured source (fetch, acknowledge, backlog).

    One per process, whichever DoFn instance runs a shard's reads: a NATS pull hands its
    messages to the connection that asked, and those that come after a fetch returned wait in
    that connection's queue for its next fetch; a reader on another connection would leave
    them there until the ack wait sends them again, late."""
    key = (settings.source, settings.nats_url, settings.pubsub_emulator_host or "",
           settings.pubsub_project, settings.telemetry_topic)  # fmt: skip
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            if settings.source == "nats":
                from betlake.core.nats import NatsClient

                client = NatsClient(settings)
            else:
                from betlake.core.pubsub import PubSubReader

                client = PubSubReader(settings)
            _clients[key] = client
    return client


def bronze_of_shard(
    settings: Settings,
    shard: int,
    columns: list[str] | None = None,
    since_us: int | None = None,
) -> pa.Table:
    """Bronze's rows that came from this source's ``shard`` (kept in ``kafka_partition``), of
    the windows starting at ``since_us`` or later, else of the last :data:`RESTORE_DAYS` event
    dates."""
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    first = tomorrow - timedelta(days=RESTORE_DAYS)
    if since_us is not None:
        first = min(tomorrow, Timestamp(micros=since_us).to_utc_datetime().date())
    dates = pa.array([first + timedelta(days=d) for d in range((tomorrow - first).days + 1)],
                     pa.date32())  # fmt: skip
    where = ds.field("event_date").isin(dates)
    if since_us is not None:
        where &= ds.field("window_start") >= pa.scalar(since_us, TIMESTAMP)
    wanted = None if columns is None else [*columns, "source", "kafka_partition"]
    rows = Lake.of(settings).scan(TELEMETRY_RAW, wanted, where)
    mine = pc.and_(
        pc.equal(rows.column("source"), settings.source),
        pc.equal(rows.column("kafka_partition"), shard),
    )
    return rows.filter(mine)


def restart_watermark(settings: Settings, rows: pa.Table) -> int | None:
    """The watermark a shard restarts at: its latest event time in bronze minus the bound."""
    if not rows.num_rows:
        return None
    latest = pc.max(pc.cast(rows.column("event_time"), pa.int64())).as_py()
    return latest - settings.max_out_of_orderness_seconds * US


class ReadShardsFn(ReadPartitionsFn):
    """Shard numbers -> a :class:`StoredRead` per read of NATS or Pub/Sub, forever (or until every
    shard is quiet, to drain). The restriction counts the reader's calls (the transport, not
    the reader, knows what is unacked); call 0 restores the shard's open windows from bronze.
    The read's positions count the shard's messages read by this run."""

    def initial_restriction(self, shard: int) -> OffsetRange:
        return OffsetRange(0, END_OF_PARTITION)

    def initial_estimator_state(self, shard: int, restriction: OffsetRange):
        rows = bronze_of_shard(self.settings, shard, ["event_time"])
        watermark = restart_watermark(self.settings, rows)
        return None if watermark is None else Timestamp(micros=watermark)

    def setup(self) -> None:
        self._client = shared_client(self.settings)
        self._read: dict[int, int] = {}
        self._open_stores()
        self._last_sequence: int | None = None
        self._moved = self._polled = time.monotonic()

    def teardown(self) -> None:
        pass  # the shared client lives as long as the worker

    def _raw_batch(self, shard: int, deliveries: list[Delivery]) -> tuple[RawBatch, list[int]]:
        start = self._read.get(shard, 0)
        self._read[shard] = start + len(deliveries)
        batch = RawBatch(
            payloads=[d.payload for d in deliveries],
            source=self.settings.source,
            arrived_at=datetime.now(UTC),
            origins=[d.origin for d in deliveries],
            kafka_partitions=[shard] * len(deliveries),
            kafka_offsets=[d.position for d in deliveries]  # NATS: stream sequences
            if self.settings.source == "nats"
            else None,
        )
        return batch, list(range(start, start + len(deliveries)))

    @beam.DoFn.unbounded_per_element()
    def process(self, shard: int, tracker=_RESTRICTION, estimator=_WATERMARK):
        call = tracker.current_restriction().start
        if not tracker.try_claim(call):
            return
        settings = self.settings
        clock = self._reads.clock(shard)
        before = estimator.current_watermark()
        if call == 0:
            restored = self._restore(shard, before, clock)
            if restored is not None:
                yield self._stored(restored, before or MIN_TIMESTAMP)
        deliveries = self._client.fetch(shard, self.batch_size, self.poll_seconds)
        now = time.monotonic()
        if deliveries:
            beam.metrics.Metrics.counter(PARTITION_METRICS, f"read_{shard}").inc(len(deliveries))
            decided = self._validate(shard, deliveries, before)
            clock.observe(decided.latest_event_us, now)
            self._store(decided.read)
            self._acknowledge(shard, [d.token for d in deliveries])
            yield self._stored(decided.read, before or MIN_TIMESTAMP)
        else:
            backlog = self._client.backlog(shard)
            if backlog and clock.idle_for(now) >= settings.idle_timeout_seconds:
                clock.observe(None, now)  # messages wait: not idle, just slow
            elif not backlog and self._drained(now, clock, backlog is not None):
                log.info("shard %d: nothing unacked, the source is quiet: drained", shard)
                beam.metrics.Metrics.counter(PARTITION_METRICS, f"drained_{shard}").inc()
                tracker.try_claim(END_OF_PARTITION)
                return
        watermark = clock.value(now, epoch_us(datetime.now(UTC)))
        if watermark is not None and (before is None or watermark > before.micros):
            estimator.set_watermark(Timestamp(micros=watermark))
            self._ledger.advance(shard, watermark)
        tracker.defer_remainder(Duration(seconds=0 if deliveries else self.poll_seconds))

    def _store_rejected(self, read: PartitionRead) -> None:
        """A transport may deliver a message again to any shard: every rejected message is
        matched against the table (keyed by origin) before it is added."""
        self._lake.insert_new(TELEMETRY_REJECTED, read.rejected)

    def _acknowledge(self, shard: int, acks: list[str]) -> None:
        """Acknowledge a stored read's messages (an ack lost: they come again, duplicates)."""
        try:
            self._client.ack(acks)
        except Exception as error:
            log.warning("shard %d: %d acks not sent (%r): those messages come again",
                        shard, len(acks), error)  # fmt: skip

    def _drained(self, now: float, clock: PartitionWatermark, backlog_known: bool) -> bool:
        """Whether the shard may end a drained run: nothing reached this reader, nor (where
        the transport tells) the whole stream, for ``drain_when_idle`` seconds. Where the
        backlog is not known (Pub/Sub; NATS not answering), for at least the ack deadline too:
        a message handed out but never received (a pull whose answer was lost, a killed job's
        pull) comes back only then."""
        if self.drain_when_idle is None:
            return False
        needed = self.drain_when_idle
        if not backlog_known:
            needed = max(needed, self.settings.ack_deadline_seconds + DEADLINE_MARGIN_SECONDS)
        if now - self._polled >= 1:
            self._polled = now
            last = self._client.last_sequence()
            if last is not None and last != self._last_sequence:
                self._last_sequence, self._moved = last, now
        quiet = min(clock.idle_for(now), now - self._moved)
        return quiet >= needed

    def _restore(
        self, shard: int, before: Timestamp | None, clock: PartitionWatermark
    ) -> PartitionRead | None:
        """Bronze's on-time events of the shard's windows still open at ``before`` (the
        restored watermark), as a read the figures take (and the ledger counts as counted).
        Windows that closed less than one window before it are restored too (their last panes
        may not have been published when the job stopped), as Kafka's commits wait that long:
        their pane comes LATE, with every on-time event bronze has."""
        if before is None:
            return None
        windowing = self.windowing
        # every window whose commit_after_us is past the watermark starts after this
        since = before.micros - (2 * windowing.window_us + windowing.allowed_lateness_seconds * US)
        rows = bronze_of_shard(self.settings, shard, since_us=since)
        clock.max_event_us = before.micros + self.settings.max_out_of_orderness_seconds * US
        starts = pc.cast(rows.column("window_start"), pa.int64()).to_numpy()
        still_open = (windowing.commit_after_us(starts) > before.micros) & ~np.asarray(
            rows.column("arrived_late").to_numpy(zero_copy_only=False), dtype=bool
        )
        rows, starts = rows.filter(pa.array(still_open)), starts[still_open]
        if not rows.num_rows:
            return None
        decision = self._ledger.decide(
            rows.column("event_id"), starts, np.zeros(len(starts), dtype=bool)
        )
        figures = rows.filter(pa.array(decision.count))
        position = self._read.get(shard, 0)
        log.info("shard %d restored %d on-time events of %d open windows from bronze",
                 shard, figures.num_rows, len(np.unique(starts)))  # fmt: skip
        return PartitionRead(
            partition=shard,
            first_offset=position,
            next_offset=position,
            to_store=rows.slice(0, 0),
            figures=figures,
            rejected=TELEMETRY_REJECTED.schema.empty_table(),
            events=0,
            too_late=0,
            watermark_us=before.micros,
        )


class ReadShards(beam.PTransform):
    """The telemetry of NATS or Pub/Sub, validated, stored and acknowledged: a
    :class:`StoredRead` per read."""

    def __init__(self, settings: Settings, shards: list[int], **read_options: object) -> None:
        super().__init__()
        self.settings, self.shards, self.read_options = settings, shards, read_options
        self.windowing = Windowing.of(settings)

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        return (
            pipeline
            | "Shards" >> beam.Create(self.shards)
            | "ReadShards"
            >> beam.ParDo(
                ReadShardsFn(self.settings, self.shards, **self.read_options)
            ).with_output_types(StoredRead)
        )
