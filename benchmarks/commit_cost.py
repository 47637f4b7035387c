"""Benchmark: what one small keyed write costs as a Delta table's file count grows.

The stream makes each read durable with one commit (``Lake.insert_new`` of the read's rejected
messages, ``Lake.append`` of its events); this writes --writes batches of --rows rejected rows
to a fresh ``telemetry_rejected`` the same way, one file each, and prints the median time of a
write and the process's RSS every --every writes: how a stream that never compacts slows down.

    .venv/bin/python -m benchmarks.commit_cost [--writes 1000] [--rows 20] [--every 250]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from benchmarks.reprocess_day import machine
from benchmarks.stream_throughput import rss_mib
from betlake.core.contract import TELEMETRY_REJECTED
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--every", type=int, default=250)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="betlake-commit-cost-"))
    lake = Lake(str(work / "lake"))
    print(f"machine: {machine()}")
    print("files before  median ms per write  RSS MiB")
    times: list[float] = []
    try:
        for i in range(args.writes):
            batch = rejected(i * args.rows, args.rows, i % 4)
            began = time.perf_counter()
            lake.insert_new(TELEMETRY_REJECTED, batch)
            times.append(time.perf_counter() - began)
            if len(times) == args.every:
                print(f"{i + 1 - args.every:12,d}  {statistics.median(times) * 1e3:19.1f}  "
                      f"{rss_mib('self'):7,.0f}")  # fmt: skip
                times = []
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
