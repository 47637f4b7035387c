"""The streaming job over one backlog, run after run: for comparing code or settings.

Starts a broker, produces the stream benchmark's backlog (--events, written once to --backlog
and reused from there by later invocations) to a fresh topic for each run, and runs the job over
it as `betlake stream` runs (its own process, a fresh lake). Per run: the time from the job's
start (imports done) to bronze's last commit and the span of bronze's commits (events/s each),
the CPU seconds of the job and its Prism, the job's minor page faults and peak RSS; then
medians. To compare two versions of the code, call it from each checkout in turn, with the same
--backlog, so both read the same messages:

    .venv/bin/python -m benchmarks.backlog_runs --runs 2 --backlog /tmp/backlog
    (cd ../other-checkout && .venv/bin/python -m benchmarks.backlog_runs --runs 2 \
        --backlog /tmp/backlog)

``--env NAME=VALUE`` (repeatable) sets a variable in the job's environment only (an allocator
setting, say).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.common import machine
from benchmarks.stream_throughput import (
    MemorySampler,
    Spawned,
    lake_settings,
    producer_process,
    stat_fields,
    stream_in_child,
    wait_for_group_coordinator,
    write_spans,
)
from betlake.core.contract import TELEMETRY_RAW
from betlake.core.lake import Lake
from betlake.core.processes import restore_default_signals
from betlake.local import broker
from betlake.local.generate import TelemetrySpec


def bronze_commits(lake: Lake) -> list[float]:
    """When each append to telemetry_raw was committed (epoch seconds), oldest first."""
    with lake.held(TELEMETRY_RAW.name) as table:
        history = table.history()
    return sorted(c["timestamp"] / 1000 for c in history if c.get("operation") == "WRITE")


def write_backlog(folder: Path, events: int, window_seconds: int) -> None:
    """The stream benchmark's backlog of ``events``, into ``folder`` unless it is there."""
    if not folder.exists():
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        spec = TelemetrySpec(events, now - timedelta(hours=7), timedelta(hours=6), seed=11)
        write_spans([spec], window_seconds, folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--backlog", type=Path, required=True, help="its spans' folder")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    restore_default_signals()
    job_env = dict(item.split("=", 1) for item in args.env)
    work = Path(tempfile.mkdtemp(prefix="betlake-backlog-runs-"))
    bootstrap = f"127.0.0.1:{broker.free_port_pair()}"
    print(f"machine: {machine()}")
    broker.start(bootstrap, home=work / "kafka", timeout=180)
    rows = []
    try:
        for run in range(args.runs):
            settings = lake_settings(work / f"lake-{run}", bootstrap, f"run-{run}")
            if run == 0:
                wait_for_group_coordinator(settings)
                write_backlog(args.backlog, args.events, settings.window_seconds)
            producer = producer_process(
                bootstrap, settings.telemetry_topic, sorted(args.backlog.glob("*.arrow")), None,
                settings.window_seconds, settings.max_out_of_orderness_seconds,
            )  # fmt: skip
            producer.wait("sending")
            valid = producer.wait("done")["valid"]
            producer.stop()
            saved = dict(os.environ)
            os.environ.update(job_env)  # the spawned job takes this process's environment
            try:
                job = Spawned(stream_in_child, settings)
            finally:
                os.environ.clear()
                os.environ.update(saved)
            started = job.wait("started", timeout=120)
            with MemorySampler(job.process.pid) as memory:
                counters, peak_mib, _ = job.wait("done")
            faults = int(stat_fields(job.process.pid)[7])  # minflt
            job.stop()
            commits = bronze_commits(Lake.of(settings))
            row = {
                "to_bronze": valid / (commits[-1] - started),
                "span": valid / (commits[-1] - commits[0]),
                "cpu": memory.cpu_total,
                "faults": faults,
                "rss": peak_mib,
            }
            rows.append(row)
            print(f"run {run + 1}: {valid:,} events ({counters['events_in']:,} read), start -> "
                  f"last bronze commit {row['to_bronze']:,.0f} events/s, first -> last commit "
                  f"{row['span']:,.0f} events/s, CPU {row['cpu']:.1f} s (job and Prism), "
                  f"{faults:,} minor faults, peak RSS {peak_mib:,.0f} MiB", flush=True)  # fmt: skip
            shutil.rmtree(work / f"lake-{run}", ignore_errors=True)
    finally:
        broker.stop(home=work / "kafka")
        shutil.rmtree(work, ignore_errors=True)

    def median(key: str) -> float:
        return statistics.median(row[key] for row in rows)

    print(f"medians of {len(rows)} runs{' with ' + ' '.join(args.env) if args.env else ''}: "
          f"{median('to_bronze'):,.0f} events/s start -> last bronze commit, "
          f"{median('span'):,.0f} first -> last commit, CPU {median('cpu'):.1f} s, "
          f"{median('faults'):,.0f} minor faults, peak RSS {median('rss'):,.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
