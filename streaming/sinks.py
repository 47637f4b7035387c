"""Where the pipeline's results go, all idempotent: bronze and rejected (keyed by event_id and
origin), gold (a range replaced by reprocessing, or panes upserted by the stream under the
no-stale-overwrite rule), the ``bet-site-stats`` topic, and the stream group's offsets."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from betlake.config import Settings
from betlake.contract import SITE_WINDOW_STATS, TELEMETRY_RAW, TELEMETRY_REJECTED
from betlake.kafka import (
    RETRY_FOREVER,
    commit,
    producer,
    publish,
    publish_corrections,
    reachable,
    stream_consumer,
)
from betlake.lake import Lake, first_per_key, time_range_filter
from streaming.kafka_source import PartitionRead

log = logging.getLogger("betlake.stream")
STOPPING = threading.Event()  # set when the job is asked to stop: waits for Kafka give up

# A streaming pane replaces a gold row only if it counts more events, or as many as a row that
# an earlier pane (not reprocessing) wrote: results only move toward the truth.
NEWER_PANE = "s.events > t.events OR (s.events = t.events AND t.pane <> 'BATCH')"


class Tally:
    """A DoFn's Beam counters, also logged (at most every ``every`` s) while the job runs."""

    def __init__(self, what: str, every: float = 30.0) -> None:
        self.what, self.every = what, every
        self.totals: Counter[str] = Counter()
        self.logged = time.monotonic()

    def add(self, **counts: int) -> None:
        for name, count in counts.items():
            if count:
                beam.metrics.Metrics.counter("betlake", name).inc(count)
                self.totals[name] += count
        if time.monotonic() - self.logged >= self.every:
            self.logged = time.monotonic()
            so_far = ", ".join(f"{name} {n}" for name, n in sorted(self.totals.items()))
            log.info("%s so far: %s", self.what, so_far)


class ReplaceGoldRangeFn(beam.DoFn):
    """All rows of a range -> one commit replacing exactly that range of ``site_window_stats``,
    stamped ``computed_at`` = when the run began reading (so no later arrival looks included);
    then the rows that changed are published to the stats topic (pane BATCH), when Kafka
    answers, so real-time consumers converge to the lake."""

    def __init__(self, settings: Settings, start: datetime, end: datetime, began: datetime) -> None:
        self.settings, self.start, self.end, self.began = settings, start, end, began

    def process(self, rows: list[dict]):
        lake = Lake(self.settings.lake)
        table = pa.Table.from_pylist(
            [row | {"computed_at": self.began} for row in rows], schema=SITE_WINDOW_STATS.schema
        )
        before = lake.scan(SITE_WINDOW_STATS, where=time_range_filter(self.start, self.end))
        lake.replace_windows(SITE_WINDOW_STATS, table, self.start, self.end)
        tally = Tally("reprocess")
        if reachable(self.settings):
            corrected = publish_corrections(self.settings, before.to_pylist(), table.to_pylist())
            tally.add(corrections_published=corrected)
        else:
            log.warning("Kafka at %s does not answer: corrections not published",
                        self.settings.kafka_bootstrap)  # fmt: skip
        tally.add(gold_rows=table.num_rows)
        yield table.num_rows


class _SeenIds:
    """event_ids per window start, forgotten once their window can take no more events."""

    def __init__(self) -> None:
        self.by_window: dict[int, set[str]] = defaultdict(set)

    def __contains__(self, item: tuple[int, str]) -> bool:
        window, event_id = item
        return event_id in self.by_window.get(window, ())

    def add(self, window: int, event_id: str) -> None:
        self.by_window[window].add(event_id)

    def forget_before(self, window_start_us: int) -> None:
        for window in [w for w in self.by_window if w < window_start_us]:
            del self.by_window[window]


_SEEN: dict[str, tuple[dict[int, _SeenIds], dict[int, _SeenIds]]] = {}
_SEEN_LOCK = threading.Lock()


class StoreTelemetryFn(beam.DoFn):
    """A :class:`PartitionRead` -> its rows made durable, and what the stream's figures take.

    Rejected messages go to ``telemetry_rejected``; valid events to ``telemetry_raw`` once, with
    the ``arrived_late`` flag the source gave them. The main output is the on-time events not
    counted yet (an Arrow table); the ``progress`` output says which offsets are stored and until
    when their windows stay open, for the offset commits.
    """

    PROGRESS = "progress"

    def __init__(self, settings: Settings, keep_open_seconds: int) -> None:
        self.settings = settings
        self.run_id = uuid.uuid4().hex  # one per pipeline: its instances share what they saw
        self.window_us = settings.window_seconds * 1_000_000
        self.lateness_us = settings.allowed_lateness_seconds * 1_000_000
        self.keep_open_us = keep_open_seconds * 1_000_000

    def setup(self) -> None:
        self.lake = Lake(self.settings.lake)
        self.tally = Tally("telemetry")
        # Shared by every instance of this DoFn in the worker (a runner may hand a partition's
        # next read to another instance), per run: ids in this run's figures, ids in bronze.
        with _SEEN_LOCK:
            self.counted, self.stored = _SEEN.setdefault(self.run_id, ({}, {}))

    def _stored_ids(self, read: PartitionRead) -> _SeenIds:
        """Ids of the partition already in bronze from its offsets on (a restart re-reads them)."""
        if read.partition not in self.stored:
            seen = self.stored[read.partition] = _SeenIds()
            again = self.lake.scan(
                TELEMETRY_RAW,
                ["event_id", "window_start"],
                (ds.field("kafka_partition") == read.partition)
                & (ds.field("kafka_offset") >= read.first_offset),
            )
            starts = pc.cast(again.column("window_start"), pa.int64()).to_pylist()
            for window, event_id in zip(starts, again.column("event_id").to_pylist(), strict=True):
                seen.add(window, event_id)
        return self.stored[read.partition]

    def process(self, read: PartitionRead, timestamp=beam.DoFn.TimestampParam):
        self.lake.insert_new(TELEMETRY_REJECTED, read.validated.rejected)
        events = first_per_key(read.validated.events, ("event_id",))
        starts = pc.cast(events.column("window_start"), pa.int64()).to_pylist()
        ids = events.column("event_id").to_pylist()
        late = events.column("arrived_late").to_pylist()
        stored, counted = (
            self._stored_ids(read),
            self.counted.setdefault(read.partition, _SeenIds()),
        )
        new_on_time = [
            not is_late and (start, event_id) not in stored
            for start, event_id, is_late in zip(starts, ids, late, strict=True)
        ]
        take = [
            not is_late and (start, event_id) not in counted
            for start, event_id, is_late in zip(starts, ids, late, strict=True)
        ]
        self.lake.append(TELEMETRY_RAW, events.filter(pa.array(new_on_time)))
        self.lake.insert_new(TELEMETRY_RAW, events.filter(pa.array(late)))  # rare; may be dupes
        for start, event_id, on_time in zip(starts, ids, take, strict=True):
            if on_time:
                stored.add(start, event_id)
                counted.add(start, event_id)
        if read.watermark_us is not None:
            for seen in (stored, counted):
                seen.forget_before(read.watermark_us - self.window_us - self.lateness_us)
        self.tally.add(
            messages_in=read.next_offset - read.first_offset,
            events_in=len(ids),
            rejected=read.validated.rejected.num_rows,
            too_late=sum(late),
        )
        figures = events.filter(pa.array(take))
        if figures.num_rows:
            yield figures
        open_until = max(
            [
                s + self.window_us + self.keep_open_us
                for s, t in zip(starts, take, strict=True)
                if t
            ],
            default=timestamp.micros,
        )
        yield beam.pvalue.TaggedOutput(
            self.PROGRESS,
            (
                read.partition,
                (read.first_offset, read.next_offset, max(open_until, timestamp.micros)),
            ),
        )


class PublishPanesFn(beam.DoFn):
    """Fired panes -> upserted into gold (never over a row counting more events) and published
    to the ``bet-site-stats`` topic, a bundle at a time; logs one line per fired window."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def setup(self) -> None:
        self.lake = Lake(self.settings.lake)
        self.producer = producer(self.settings, **RETRY_FOREVER)  # waits out an outage
        self.tally = Tally("figures")

    def start_bundle(self) -> None:
        self.rows: list[dict] = []

    def process(self, row: dict):
        self.rows.append(row)

    def finish_bundle(self) -> None:
        if not self.rows:
            return
        latest: dict[tuple[datetime, str], dict] = {}
        for row in self.rows:  # a bundle may hold several panes of one window: keep the fullest
            key = (row["window_start"], row["site_id"])
            if key not in latest or row["events"] >= latest[key]["events"]:
                latest[key] = row
        rows = self._newer_than_lake(latest)
        if rows:
            table = pa.Table.from_pylist(rows, schema=SITE_WINDOW_STATS.schema)
            self.lake.upsert(SITE_WINDOW_STATS, table, update_when=NEWER_PANE)
            publish(self.producer, self.settings.stats_topic, rows, STOPPING)
        self._log_windows(list(latest.values()))
        panes = Counter(row["pane"] for row in self.rows)
        self.tally.add(
            on_time_panes=panes["ON_TIME"], late_panes=panes["LATE"], published=len(rows)
        )

    def _newer_than_lake(self, latest: dict[tuple[datetime, str], dict]) -> list[dict]:
        """The rows the no-stale-overwrite rule lets through against gold as it is now."""
        starts = sorted({start for start, _ in latest})
        existing = self.lake.scan(
            SITE_WINDOW_STATS,
            ["window_start", "site_id", "events", "pane"],
            ds.field("window_date").isin(sorted({s.date() for s in starts}))
            & ds.field("window_start").isin(pa.array(starts, SITE_WINDOW_STATS.schema.field(
                "window_start").type)),
        )  # fmt: skip
        current = {
            (r["window_start"], r["site_id"]): (r["events"], r["pane"])
            for r in existing.to_pylist()
        }
        return [
            row
            for key, row in latest.items()
            if key not in current
            or row["events"] > current[key][0]
            or (row["events"] == current[key][0] and current[key][1] != "BATCH")
        ]

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
    """(partition, (first, next offset, open until)) -> the stream group's offsets committed
    once every window those offsets fed is past its last pane (event-time timers), so a restart
    re-reads exactly what the lake does not have in final form."""

    PENDING = BagStateSpec("pending", PickleCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def setup(self) -> None:
        self.consumer = stream_consumer(self.settings)

    def teardown(self) -> None:
        self.consumer.close()

    def process(
        self,
        element: tuple[int, tuple[int, int, int]],
        pending=beam.DoFn.StateParam(PENDING),
        expiry=beam.DoFn.TimerParam(EXPIRY),
    ):
        pending.add(element[1])
        expiry.set(Timestamp(micros=min(open_until for _, _, open_until in pending.read())))

    @on_timer(EXPIRY)
    def commit_expired(
        self,
        partition=beam.DoFn.KeyParam,
        fired=beam.DoFn.TimestampParam,
        pending=beam.DoFn.StateParam(PENDING),
        expiry=beam.DoFn.TimerParam(EXPIRY),
    ):
        marks = sorted(pending.read())
        still_open = [m for m in marks if m[2] > fired.micros]
        upto = still_open[0][0] if still_open else marks[-1][1]
        started = time.monotonic()
        commit(self.consumer, self.settings, {partition: upto}, STOPPING)
        log.debug("partition %d committed up to %d (%.3fs)", partition, upto,
                  time.monotonic() - started)  # fmt: skip
        pending.clear()
        for mark in still_open:
            pending.add(mark)
        if still_open:
            expiry.set(Timestamp(micros=min(m[2] for m in still_open)))
