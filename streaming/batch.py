"""The batch entry of the one pipeline: recompute a window range from ``telemetry_raw``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import apache_beam as beam

from betlake.core.config import Settings
from betlake.core.contract import (
    EVENT_COLUMNS,
    TELEMETRY_RAW,
)
from betlake.core.lake import Lake
from betlake.core.reference import Reference
from betlake.core.windowing import Windowing
from streaming.runners import batch_options, counters
from streaming.sinks import ReplaceGoldRangeFn
from streaming.windows import SiteWindowStats

READ_CHUNK = timedelta(hours=1)  # one read (one Beam element, one dask task) per hour


class ReadRawRangeFn(beam.DoFn):
    """``(start, end)`` -> the events of ``telemetry_raw`` in that event-time range, one table."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    def process(self, chunk: tuple[datetime, datetime]):
        events = self.lake.scan_range(
            TELEMETRY_RAW, *chunk, EVENT_COLUMNS, column="event_time", day_column="event_date"
        )
        if events.num_rows:
            yield events


class AllRows(beam.PTransform):
    """Every row of the range as one list (``[]`` for a range without events): one group,
    seeded so that it exists even when no row does. ``ToList`` would inject its empty default
    through a side input, which the DaskRunner computes as a nested job inside a task, holding
    a worker (and deadlocking a cluster of one worker thread) for the whole run."""

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        seed = rows.pipeline | "Seed" >> beam.Create([("range", None)])
        return (
            (rows | "OneKey" >> beam.Map(lambda row: ("range", row)), seed)
            | "WithSeed" >> beam.Flatten()
            | "OneGroup" >> beam.GroupByKey()
            | "List" >> beam.MapTuple(lambda _, group: [row for row in group if row is not None])
        )


@dataclass(frozen=True)
class ReprocessReport:
    """What a reprocessing run did."""

    start: datetime
    end: datetime
    events: int
    gold_rows: int
    seconds: float


def hour_chunks(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into pieces of at most :data:`READ_CHUNK`."""
    chunks, at = [], start
    while at < end:
        chunks.append((at, min(at + READ_CHUNK, end)))
        at += READ_CHUNK
    return chunks


def build_reprocess(
    pipeline: beam.Pipeline, settings: Settings, start: datetime, end: datetime
) -> tuple[datetime, datetime]:
    """Add the transforms recomputing [start, end) to ``pipeline``; returns the range (UTC)."""
    windowing = Windowing.of(settings)
    start, end = windowing.check_range(start, end)
    Reference.from_lake(Lake.of(settings))  # fails clearly if it is not loaded yet
    _ = (
        pipeline
        | "Chunks" >> beam.Create(hour_chunks(start, end))
        | "ReadRaw" >> beam.ParDo(ReadRawRangeFn(Lake.of(settings)))
        | "SiteWindowStats" >> SiteWindowStats(Lake.of(settings), windowing, batch=True)
        | "AllRows" >> AllRows()
        | "ReplaceGold" >> beam.ParDo(ReplaceGoldRangeFn(settings, start, end, datetime.now(UTC)))
    )
    return start, end


def reprocess(settings: Settings, start: datetime, end: datetime) -> ReprocessReport:
    """Recompute every window in [start, end) from ``telemetry_raw`` and replace it in gold.

    Runs :class:`SiteWindowStats` in batch mode on the configured runner (see
    :mod:`streaming.runners`): the range is read in hour chunks (each within one window date;
    on dask, one task each), the partials are merged per (window, site) (on dask, tasks by the
    key's hash), and all rows replace the range in gold in one commit. Windows with no events
    in the range disappear from gold.
    """
    began = time.perf_counter()
    with batch_options(settings) as options:
        with beam.Pipeline(options=options) as pipeline:
            start, end = build_reprocess(pipeline, settings, start, end)
        totals = counters(pipeline.result)
    return ReprocessReport(
        start=start,
        end=end,
        events=totals.get("events", 0),
        gold_rows=totals.get("gold_rows", 0),
        seconds=time.perf_counter() - began,
    )
