"""Which windows need recomputing: closed windows whose ``telemetry_raw`` received rows that
their gold figures cannot include: events that reached the stream too late, and events ingested
from files, after the window's last reprocessing (or with none yet)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from betlake.core.config import Settings
from betlake.core.contract import SITE_WINDOW_STATS, TELEMETRY_RAW, TIMESTAMP
from betlake.core.lake import Lake
from betlake.core.windowing import Windowing, epoch_us


@dataclass
class Arrivals:
    """The late-data sensor's cursor: rows seen up to an ingest time, and windows with new rows
    (window start -> latest ingest time, epoch microseconds) not reprocessed yet."""

    seen_until_us: int = 0
    pending: dict[int, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, cursor: str | None) -> Arrivals:
        if not cursor:
            return cls()
        saved = json.loads(cursor)
        return cls(saved["seen_until_us"], {int(k): v for k, v in saved["pending"].items()})

    def dump(self) -> str:
        return json.dumps({"seen_until_us": self.seen_until_us, "pending": self.pending})


def _per_window(table: pa.Table, column: str, aggregate: str) -> dict[int, int]:
    starts = pc.cast(table.column("window_start"), pa.int64())
    values = pc.cast(table.column(column), pa.int64())
    grouped = pa.table({"w": starts, "v": values}).group_by("w").aggregate([("v", aggregate)])
    return dict(zip(grouped.column("w").to_pylist(), grouped.column(f"v_{aggregate}").to_pylist(),
                    strict=True))  # fmt: skip


def windows_to_recompute(
    lake: Lake,
    settings: Settings,
    arrivals: Arrivals,
    busy: set[int] = frozenset(),
    now: datetime | None = None,
) -> tuple[list[int], Arrivals]:
    """Closed windows (end plus allowed lateness before ``now``) with such rows newer than their
    last reprocessing; returns them and the cursor to keep for next time. Windows a run is
    recomputing right now (``busy``) wait for a later call."""
    now_us = epoch_us(now or datetime.now(UTC))
    new = lake.scan(  # too late for the stream, or not from Kafka at all (file ingests)
        TELEMETRY_RAW,
        ["window_start", "ingest_time"],
        (ds.field("ingest_time") > pa.scalar(arrivals.seen_until_us, pa.int64()).cast(TIMESTAMP))
        & (ds.field("arrived_late") | ds.field("kafka_partition").is_null()),
    )
    pending = dict(arrivals.pending)
    for window, ingested in _per_window(new, "ingest_time", "max").items():
        pending[window] = max(ingested, pending.get(window, 0))
    seen_until = max([arrivals.seen_until_us, *pending.values()])
    windowing = Windowing.of(settings)
    closed = sorted(w for w in pending if windowing.closes_us(w) <= now_us and w not in busy)
    computed = {}
    if closed:
        gold = lake.scan(
            SITE_WINDOW_STATS,
            ["window_start", "computed_at", "pane"],
            ds.field("window_start").isin(pa.array(closed, pa.int64()).cast(TIMESTAMP)),
        )
        gold = gold.filter(pc.equal(gold.column("pane"), "BATCH"))
        computed = _per_window(gold, "computed_at", "min")
    due = [w for w in closed if pending[w] > computed.get(w, -1)]
    for window in closed:
        del pending[window]
    return due, Arrivals(seen_until, pending)


def coalesce(windows: list[int], width_us: int) -> list[tuple[int, int]]:
    """Sorted window starts -> [start, end) ranges of adjacent windows."""
    ranges: list[tuple[int, int]] = []
    for window in sorted(windows):
        if ranges and ranges[-1][1] == window:
            ranges[-1] = (ranges[-1][0], window + width_us)
        else:
            ranges.append((window, window + width_us))
    return ranges
