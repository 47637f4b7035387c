"""Benchmark: ingest of a JSON lines file, against DuckDB reading the same file to Parquet.

Generates a day of N valid events (with the generator's duplicates and malformed lines) into one
file, a process a core, then times, alternately, --repeats runs of each (medians):
  * betlake: ``ingest_files`` into a fresh lake (validation by the contract's rules in worker
    processes, the keyed append to ``telemetry_raw``, the rejected rows);
  * baseline: DuckDB's ``read_ndjson`` of the same file (its types, malformed lines skipped, no
    contract rule, no dedup) copied to one Parquet file: the least work that turns those lines
    into a columnar table.
Prints lines/s, CPU per line (worker processes included) and the ratio, and checks each betlake
run against the generator: exactly its N valid events stored, once each.

    .venv/bin/python -m benchmarks.ingest [--events 2000000] [--repeats 3]

The worker processes of an ingest import this module again (it is the main one): the Delta and
DuckDB modules are imported where they are used, so they load only what ``betlake ingest``'s
workers load.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from rich.progress import track

from benchmarks.common import DAY, REFERENCE, machine, own_cpu_seconds
from betlake.core.config import Settings
from betlake.core.ingest import ingest_files
from betlake.local.generate import TelemetrySpec, generate_telemetry

HOURS = 24


def _write_part(job: tuple[TelemetrySpec, Path]) -> Path:
    spec, path = job
    path.write_text("".join(f"{line}\n" for _, line in generate_telemetry(spec, REFERENCE)))
    return path


def write_day(events: int, path: Path) -> None:
    """A day of ``events`` valid events (an hour a process, seeds apart so ids never repeat)."""
    hour = timedelta(hours=1)
    jobs = [(TelemetrySpec(events // HOURS + (h < events % HOURS), DAY + h * hour, hour, seed=h),
             path.with_suffix(f".{h:02d}")) for h in range(HOURS)]  # fmt: skip
    context = multiprocessing.get_context("spawn")
    with context.Pool(os.cpu_count() or 1) as pool, path.open("wb") as out:
        for part in track(pool.imap(_write_part, jobs), "generating telemetry", len(jobs)):
            with part.open("rb") as source:
                shutil.copyfileobj(source, out)
            part.unlink()


def betlake_run(path: Path, work: Path, events: int) -> tuple[float, float, int]:
    """Seconds and CPU seconds of one ingest into a fresh lake, and its lines; fails unless
    it stored exactly the generator's ``events``, once each."""
    from betlake.core.lake import Lake

    lake_path = work / "lake"
    shutil.rmtree(lake_path, ignore_errors=True)
    settings = Settings.from_env(
        {"BETLAKE_LAKE": str(lake_path), "BETLAKE_REFERENCE": str(REFERENCE)}
    )
    began, cpu = time.perf_counter(), own_cpu_seconds()
    report = ingest_files(settings, [path], show_progress=False)
    seconds, cpu = time.perf_counter() - began, own_cpu_seconds() - cpu
    stored, distinct = Lake.of(settings).connect().execute(
        "SELECT count(*), count(DISTINCT event_id) FROM telemetry_raw"
    ).fetchone()  # fmt: skip
    if not report.stored == stored == distinct == events:
        raise SystemExit(f"ingest stored {stored:,} rows, {distinct:,} distinct, {report.stored:,} "
                         f"reported: the generator made {events:,} valid events")  # fmt: skip
    return seconds, cpu, report.lines


def duckdb_run(path: Path, work: Path) -> tuple[float, float]:
    """Seconds and CPU seconds of DuckDB reading the file into one Parquet file."""
    import duckdb

    target = work / "duckdb.parquet"
    began, cpu = time.perf_counter(), own_cpu_seconds()
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT * FROM read_ndjson('{path}', ignore_errors = true)) "
                    f"TO '{target}' (FORMAT parquet)")  # fmt: skip
    seconds, cpu = time.perf_counter() - began, own_cpu_seconds() - cpu
    target.unlink()
    return seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="betlake-bench-ingest-") as folder:
        work = Path(folder)
        path = work / "day.jsonl"
        write_day(args.events, path)
        size = path.stat().st_size
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(betlake_run(path, work, args.events))
            theirs.append(duckdb_run(path, work))
        lines = ours[0][2]
        print(f"file: {lines:,} lines, {size / 2**20:,.0f} MiB, {args.events:,} valid events")
        for name, runs in (("betlake ingest", ours), ("duckdb read_ndjson", theirs)):
            seconds = statistics.median(run[0] for run in runs)
            cpu = statistics.median(run[1] for run in runs)
            print(f"{name:>18}: {seconds:6.2f} s (median of {len(runs)}), {lines / seconds:,.0f} "
                  f"lines/s, {cpu / lines * 1e6:.1f} us CPU a line")  # fmt: skip
        ratio = statistics.median(o[0] for o in ours) / statistics.median(t[0] for t in theirs)
        print(f"betlake's time / DuckDB's: {ratio:.2f}x; every run stored the generator's "
              f"{args.events:,} valid events once each")  # fmt: skip


if __name__ == "__main__":
    main()
