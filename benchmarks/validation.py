"""Benchmark: the contract's validation of a batch of generated messages, CPU per message,
and the stream's next step, the event ledger's lateness decisions, CPU per event.

Generates N messages (valid events with duplicates, malformed and late ones, as the stream
benchmark's backlog), validates them as one batch --repeats times after a warm-up, and prints
the median CPU time per message and how many of them the batch path (plain messages) took;
then has a fresh :class:`~streaming.ledger.EventLedger` (bronze empty) decide the valid events
in reads of the stream's size, --repeats times, and prints the median CPU time per event.

    .venv/bin/python -m benchmarks.validation [--messages 50000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.common import REFERENCE, machine
from betlake.core import contract
from betlake.core.contract import TELEMETRY_RAW, RawBatch, validate
from betlake.core.kafka import READ_BATCH
from betlake.core.windowing import Windowing
from betlake.local.generate import TelemetrySpec, generate_telemetry
from streaming.ledger import EventLedger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    spec = TelemetrySpec(args.messages, datetime.now(UTC) - timedelta(hours=3), timedelta(hours=1))
    payloads = [line.encode() for _, line in generate_telemetry(spec, REFERENCE)]
    n = len(payloads)
    batch = RawBatch(payloads, "kafka", datetime.now(UTC), [""] * n, [0] * n, list(range(n)))

    def run() -> float:
        began = time.process_time()
        validate(batch, window_seconds=300, max_clock_skew_seconds=300)
        return time.process_time() - began

    run()  # warm-up: pyarrow's first conversions pay a one-time set-up
    seconds = statistics.median(run() for _ in range(args.repeats))
    plain = len(contract._plain_events(payloads, 2**62)[0])
    print(f"machine: {machine()}")
    print(f"validate {n:,} messages: median {seconds / n * 1e6:.2f} us CPU per message "
          f"({n / seconds:,.0f} per CPU second); {plain:,} decided by the batch path")  # fmt: skip
    events = validate(batch, window_seconds=300, max_clock_skew_seconds=300).events
    decide = statistics.median(ledger_seconds(events) for _ in range(args.repeats))
    print(f"ledger: {events.num_rows:,} events decided in reads of {READ_BATCH:,}: median "
          f"{decide / events.num_rows * 1e6:.2f} us CPU per event")  # fmt: skip


def ledger_seconds(events: pa.Table) -> float:
    """CPU seconds a fresh ledger takes to decide ``events``, read by read, as the stream does
    (the ids as their Arrow column, window starts and lateness as arrays; none late by the
    watermark)."""
    ledger = EventLedger(lambda _: TELEMETRY_RAW.schema.empty_table(), [0], Windowing(300, 30, 900))
    spent = 0.0
    for read in events.to_batches(READ_BATCH):
        starts = pc.cast(read.column("window_start"), pa.int64()).to_numpy()
        began = time.process_time()
        ledger.decide(read.column("event_id"), starts, np.zeros(len(starts), bool))
        spent += time.process_time() - began
    return spent


if __name__ == "__main__":
    main()
