"""Where the pipeline's figures go, all idempotent: gold (a range replaced by reprocessing, or
panes upserted by the stream under the no-stale-overwrite rule), the ``bet-site-stats`` topic,
and the stream group's offsets. (Bronze and rejected are written by the source's reader, see
:mod:`streaming.kafka_source`.)"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.utils.shared import Shared
from apache_beam.utils.timestamp import Timestamp

from betlake.core.config import Settings
from betlake.core.contract import NEWER_PANE, SITE_WINDOW_STATS
from betlake.core.kafka import (
    RETRY_FOREVER,
    Committed,
    commit,
    producer,
    publish,
    publish_corrections,
    reachable,
    stream_consumer,
)
from betlake.core.lake import Lake
from streaming.kafka_source import StoredOffsets
from streaming.metrics import Tally
from streaming.reporting import report_gold

log = logging.getLogger("betlake.stream")
STOPPING = threading.Event()  # set when the job is asked to stop: waits for Kafka give up


class ReplaceGoldRangeFn(beam.DoFn):
    """All rows of a range -> one commit replacing exactly that range of ``site_window_stats``,
    stamped ``computed_at`` = when the run began reading (so no later arrival looks included);
    then the rows that changed are published to the stats topic (pane BATCH), when Kafka
    answers, so real-time consumers converge to the lake."""

    def __init__(self, settings: Settings, start: datetime, end: datetime, began: datetime) -> None:
        self.settings, self.start, self.end, self.began = settings, start, end, began

    def process(self, rows: list[dict]):
        lake = Lake.of(self.settings)
        table = pa.Table.from_pylist(
            [row | {"computed_at": self.began} for row in rows], schema=SITE_WINDOW_STATS.schema
        )
        before = lake.scan_range(SITE_WINDOW_STATS, self.start, self.end)
        lake.replace_windows(SITE_WINDOW_STATS, table, self.start, self.end)
        tally = Tally("reprocess")
        if reachable(self.settings):
            corrected = publish_corrections(self.settings, before.to_pylist(), table.to_pylist())
            tally.add(corrections_published=corrected)
        else:
            log.warning("Kafka at %s does not answer: corrections not published",
                        self.settings.kafka_bootstrap)  # fmt: skip
        tally.add(gold_rows=table.num_rows, events=pc.sum(table.column("events")).as_py() or 0)
        yield dict(tally.totals)  # the run's tallies, for a runner that keeps no metrics (dask)


class PublishPanesFn(beam.DoFn):
    """Fired panes -> upserted into gold (never over a row counting more events) and published
    to the ``bet-site-stats`` topic, through the worker's one :class:`PaneWriter`, by group
    commit; a bundle ends once its panes are written. It emits nothing: its output only carries
    the watermark that holds the offset commits."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.writer_handle = Shared()  # one writer for every bundle of a worker

    def setup(self) -> None:
        self.writer = self.writer_handle.acquire(
            lambda: GroupCommit(PaneWriter(self.settings).write)
        )

    def start_bundle(self) -> None:
        self.rows: list[dict] = []

    def process(self, row: dict):
        self.rows.append(row)

    def finish_bundle(self) -> None:
        if self.rows:
            self.writer.submit(self.rows)


@dataclass
class _Handover:
    """One caller's items, waiting to be written."""

    items: list
    written: bool = False
    error: BaseException | None = None


class GroupCommit:
    """Writes the items of many threads, one batch at a time: a caller hands its items over and
    waits; the caller that gets to write takes every item handed over so far and writes them in
    one call of ``write`` (a group commit). A slow write costs the items that queued meanwhile
    one more write, not one each; and one write at a time keeps the writes in order."""

    def __init__(self, write: Callable[[list], None]) -> None:
        self.write = write
        self.writing = threading.Lock()
        self.queue_lock = threading.Lock()
        self.queued: list[_Handover] = []

    def submit(self, items: list) -> None:
        """Return once ``items`` are written; raise what failed the batch they were in."""
        mine = _Handover(items)
        with self.queue_lock:
            self.queued.append(mine)
        with self.writing:
            if not mine.written:
                with self.queue_lock:
                    batch, self.queued = self.queued, []
                try:
                    self.write([item for handover in batch for item in handover.items])
                except BaseException as error:  # every caller of the batch fails (is retried)
                    for handover in batch:
                        handover.error = error
                finally:
                    for handover in batch:
                        handover.written = True
        if mine.error is not None:
            raise mine.error


class PaneWriter:
    """Writes panes to gold and the topic: a pane is published only if it moved gold forward,
    so with one batch at a time (:class:`GroupCommit`) the topic follows gold's order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lake = Lake.of(settings)
        self.producer = producer(settings, **RETRY_FOREVER)  # waits out an outage
        self.tally = Tally("figures")

    def write(self, panes: list[dict]) -> None:
        latest: dict[tuple[datetime, str], dict] = {}
        for row in panes:  # a batch may hold several panes of one window: keep the fullest
            key = (row["window_start"], row["site_id"])
            if key not in latest or row["events"] >= latest[key]["events"]:
                latest[key] = row
        fired = pa.Table.from_pylist(list(latest.values()), schema=SITE_WINDOW_STATS.schema)
        rows = self.lake.rows_to_upsert(SITE_WINDOW_STATS, fired, NEWER_PANE).to_pylist()
        if rows:
            table = pa.Table.from_pylist(rows, schema=SITE_WINDOW_STATS.schema)
            self.lake.upsert(SITE_WINDOW_STATS, table, update_when=NEWER_PANE)
            publish(self.producer, self.settings.stats_topic, rows, STOPPING)
            report_gold(self.settings, rows)  # queued for Dagster, reported off this path
        self._log_windows(list(latest.values()))
        timings = Counter(row["pane"] for row in panes)
        self.tally.add(
            on_time_panes=timings["ON_TIME"], late_panes=timings["LATE"], published=len(rows)
        )

    @staticmethod
    def _log_windows(rows: list[dict]) -> None:
        """One line per fired window: sites, events, pane, and how long after it fired (for an
        ON_TIME pane: after the watermark passed the window's end) it was published."""
        now = datetime.now(UTC)
        windows: dict[tuple[datetime, str], list[dict]] = defaultdict(list)
        for row in rows:
            windows[row["window_start"], row["pane"]].append(row)
        for (start, pane), fired in sorted(windows.items()):
            log.info(
                "window %s %-7s %3d sites %7d events, published %.2fs after it fired",
                f"{start:%Y-%m-%d %H:%M}", pane, len(fired), sum(r["events"] for r in fired),
                (now - min(r["computed_at"] for r in fired)).total_seconds(),
            )  # fmt: skip


class CommitOffsetsFn(beam.DoFn):
    """(partition, :class:`StoredOffsets`) -> the stream group's offsets committed once every
    window those offsets fed is past its last pane (event-time timers), so a restart re-reads
    exactly what the lake does not have in final form. Each commit keeps, in its metadata, the
    partition's watermark when the committed offset was read: a restarted job starts from it,
    so events that waited in Kafka meanwhile are judged as the stopped job would have."""

    # Beam typehint of the input: the key's coder must be deterministic for state and timers.
    INPUT = beam.typehints.KV[int, beam.typehints.Tuple[int, int, int, int]]

    # The reads not committed yet, appended blind: the bag is read only when the timer fires.
    # A live partition adds a read every poll and keeps them for a window plus the allowed
    # lateness (thousands at 1x), and on Prism each read of it is a round trip with them all.
    PENDING = BagStateSpec("pending", PickleCoder())
    EARLIEST = ReadModifyWriteStateSpec("earliest", VarIntCoder())  # when the timer fires
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def setup(self) -> None:
        self.consumer = stream_consumer(self.settings)

    def teardown(self) -> None:
        self.consumer.close()

    def process(
        self,
        element: tuple[int, tuple[int, int, int, int]],
        pending=beam.DoFn.StateParam(PENDING),
        earliest=beam.DoFn.StateParam(EARLIEST),
        expiry=beam.DoFn.TimerParam(EXPIRY),
    ):
        mark = StoredOffsets(*element[1])
        pending.add(mark)
        fires_at = earliest.read()
        if fires_at is None or mark.open_until_us < fires_at:
            earliest.write(mark.open_until_us)
            expiry.set(Timestamp(micros=mark.open_until_us))

    @on_timer(EXPIRY)
    def commit_expired(
        self,
        partition=beam.DoFn.KeyParam,
        fired=beam.DoFn.TimestampParam,
        pending=beam.DoFn.StateParam(PENDING),
        earliest=beam.DoFn.StateParam(EARLIEST),
        expiry=beam.DoFn.TimerParam(EXPIRY),
    ):
        marks = sorted(pending.read())
        earliest.clear()
        if not marks:  # a timer left from reads an earlier firing already committed
            return
        still_open = [m for m in marks if m.open_until_us > fired.micros]
        if still_open:  # resume at the first read a window still needs, under its watermark
            upto = Committed(still_open[0].first_offset, still_open[0].watermark_us)
        else:  # resume after the last read (its watermark: a lower bound of the next one's)
            upto = Committed(marks[-1].next_offset, marks[-1].watermark_us)
        if upto.watermark_us < 0:
            upto = upto._replace(watermark_us=None)
        started = time.monotonic()
        commit(self.consumer, self.settings, {partition: upto}, STOPPING)
        log.debug("partition %d committed up to %d (%.3fs)", partition, upto.offset,
                  time.monotonic() - started)  # fmt: skip
        pending.clear()
        for mark in still_open:
            pending.add(mark)
        if still_open:
            fires_at = min(m.open_until_us for m in still_open)
            earliest.write(fires_at)
            expiry.set(Timestamp(micros=fires_at))
