"""Benchmark: what one small keyed write costs as a Delta table's file count grows.

The stream makes each read durable with one commit (``Lake.insert_new`` of the read's rejected
messages, ``Lake.append`` of its events) and upserts each bundle of fired panes into gold
(``Lake.rows_to_upsert``, then the merge); this writes --writes batches of --rows rejected rows
to a fresh ``telemetry_rejected`` the same way, one file each, and as many panes of 25 sites
(a window each, all of one day) to a fresh ``site_window_stats``, and prints the median time of
each kind of write, of bringing the lake's table forward when nothing was added (the Delta log
listed: it grows with every commit the log keeps) and the process's RSS every --every writes:
how a stream slows down between compactions (gold is compacted nightly).

    .venv/bin/python -m benchmarks.commit_cost [--writes 1000] [--rows 20] [--every 250]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from benchmarks.common import machine
from benchmarks.stream_throughput import rss_mib
from betlake.core.contract import NEWER_PANE, SITE_WINDOW_STATS, TELEMETRY_REJECTED
from betlake.core.lake import Lake


def rejected(first: int, rows: int, partition: int) -> pa.Table:
    """``rows`` rejected messages of one partition, offsets from ``first``."""
    offsets = list(range(first, first + rows))
    return pa.table(
        {
            "ingest_time": [datetime.now(UTC)] * rows,
            "source": ["kafka"] * rows,
            "kafka_partition": [partition] * rows,
            "kafka_offset": offsets,
            "reason": ["malformed_json"] * rows,
            "payload": ["{"] * rows,
            "origin": [f"kafka:t:{partition}:{o}" for o in offsets],
        },
        schema=TELEMETRY_REJECTED.schema,
    )


def panes(window: int) -> pa.Table:
    """One ON_TIME pane of 25 sites for window number ``window`` of 2026-12-03."""
    start = datetime(2026, 12, 3, tzinfo=UTC) + timedelta(minutes=5 * window)
    row = {"window_start": start, "window_end": start + timedelta(minutes=5), "events": 100,
           "active_players": 1, "vip_players": 0, "sessions": 1, "bets": 1,
           "stake_eur": Decimal("1.00"), "payout_eur": Decimal("0.50"), "ggr_eur": Decimal("0.50"),
           "deposits_eur": Decimal(0), "withdrawals_eur": Decimal(0), "unpriced_events": 0,
           "pane": "ON_TIME", "computed_at": datetime.now(UTC),
           "window_date": start.date()}  # fmt: skip
    rows = [row | {"site_id": f"site-{k:02d}"} for k in range(25)]
    return pa.Table.from_pylist(rows, schema=SITE_WINDOW_STATS.schema)


def upsert_panes(lake: Lake, fired: pa.Table) -> None:
    """As the stream's PaneWriter writes gold."""
    rows = lake.rows_to_upsert(SITE_WINDOW_STATS, fired, NEWER_PANE)
    lake.upsert(SITE_WINDOW_STATS, rows, update_when=NEWER_PANE)


def timed(write: Callable[..., object], *args: object) -> float:
    began = time.perf_counter()
    write(*args)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--every", type=int, default=250)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="betlake-commit-cost-"))
    lake = Lake(str(work / "lake"))
    print(f"machine: {machine()}")
    print("writes before  median ms: rejected  gold upsert  forward  RSS MiB")
    rejects: list[float] = []
    upserts: list[float] = []
    forwards: list[float] = []
    try:
        for i in range(args.writes):
            batch = rejected(i * args.rows, args.rows, i % 4)
            rejects.append(timed(lake.insert_new, TELEMETRY_REJECTED, batch))
            upserts.append(timed(upsert_panes, lake, panes(i)))
            forwards.append(timed(lake.version, TELEMETRY_REJECTED.name))
            if len(rejects) == args.every:
                reject_ms, upsert_ms, forward_ms = (
                    statistics.median(t) * 1e3 for t in (rejects, upserts, forwards)
                )
                print(f"{i + 1 - args.every:13,d}  {reject_ms:18.1f}  {upsert_ms:11.1f}  "
                      f"{forward_ms:7.1f}  {rss_mib('self'):7,.0f}")  # fmt: skip
                rejects, upserts, forwards = [], [], []
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
