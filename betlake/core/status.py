"""The state of the lake and of the stream's position in Kafka, in facts an operator reads:
``betlake status`` prints them, and the Dagster asset metadata carries the same ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from betlake.core.config import Settings
from betlake.core.contract import SITE_WINDOW_STATS, TELEMETRY_RAW
from betlake.core.corrections import Arrivals, coalesce, windows_to_recompute
from betlake.core.kafka import (
    KafkaError,
    committed_offsets,
    end_offsets,
    partitions_of,
    reachable,
    stream_consumer,
)
from betlake.core.lake import Lake
from betlake.core.windowing import Windowing, from_epoch_us


@dataclass(frozen=True)
class BronzeFacts:
    """``telemetry_raw`` from its Delta log: rows, latest event time, latest arrival."""

    rows: int
    last_event: datetime | None
    last_arrival: datetime | None


@dataclass(frozen=True)
class GoldFacts:
    """``site_window_stats``: rows, latest window, and the latest window the stream fired."""

    rows: int
    last_window: datetime | None
    last_stream_window: datetime | None
    last_stream_pane: str | None


@dataclass(frozen=True)
class PartitionLag:
    """The stream group's position in one telemetry partition."""

    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


def _log_max(actions: pa.Table, column: str) -> datetime | None:
    name = f"max.{column}"
    return pc.max(actions.column(name)).as_py() if name in actions.column_names else None


def bronze_facts(lake: Lake) -> BronzeFacts:
    """Row count and latest times of ``telemetry_raw``, read from the Delta log statistics (no
    data file is opened: cheap enough to run every few seconds)."""
    with lake.held(TELEMETRY_RAW.name) as table:
        if table is None:
            return BronzeFacts(0, None, None)
        actions = pa.table(table.get_add_actions(flatten=True))
    if not len(actions):
        return BronzeFacts(0, None, None)
    rows = int(pc.sum(actions.column("num_records")).as_py() or 0)
    return BronzeFacts(rows, _log_max(actions, "event_time"), _log_max(actions, "ingest_time"))


def gold_facts(lake: Lake) -> GoldFacts:
    """Rows and latest windows of ``site_window_stats`` (one scan of two columns)."""
    gold = lake.scan(SITE_WINDOW_STATS, ["window_start", "pane", "computed_at"])
    if not gold.num_rows:
        return GoldFacts(0, None, None, None)
    streamed = gold.filter(pc.not_equal(gold.column("pane"), "BATCH"))
    last_stream, last_pane = None, None
    if streamed.num_rows:
        latest = streamed.sort_by([("window_start", "descending")]).slice(0, 1).to_pylist()[0]
        last_stream, last_pane = latest["window_start"], latest["pane"]
    return GoldFacts(
        gold.num_rows, pc.max(gold.column("window_start")).as_py(), last_stream, last_pane
    )


def pending_corrections(lake: Lake, settings: Settings) -> list[tuple[datetime, datetime]]:
    """[start, end) ranges of closed windows the late-data sensor will reprocess: they hold
    rows (too late for the stream, or from files) newer than their last reprocessing."""
    due, _ = windows_to_recompute(lake, settings, Arrivals())
    width = Windowing.of(settings).window_us
    return [(from_epoch_us(a), from_epoch_us(b)) for a, b in coalesce(due, width)]


def consumer_lag(settings: Settings) -> list[PartitionLag] | None:
    """The stream group's committed offset and the end offset of each telemetry partition, or
    None when Kafka does not answer."""
    if not reachable(settings):
        return None
    try:
        partitions = partitions_of(settings, settings.telemetry_topic)
        committed = committed_offsets(settings, settings.telemetry_topic, partitions)
    except KafkaError:
        return None
    consumer = stream_consumer(settings)
    try:
        ends = end_offsets(consumer, settings, partitions)
    finally:
        consumer.close()
    if ends is None:
        return None
    return [PartitionLag(p, committed[p].offset, ends[p]) for p in sorted(partitions)]
