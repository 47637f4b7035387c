"""Benchmark: reprocess a day of telemetry as one Dagster run vs the same aggregation in DuckDB.

Generates N events over one day, ingests them, then times (median of --repeats runs each):
  * betlake: the whole day (288 partitions) as ONE Dagster run of site_window_stats
    (``dagster asset materialize --partition-range``), and the Beam pipeline inside it, on the
    local runner and, with ``--runner dask``, also on Beam's DaskRunner (on a LocalCluster of
    one worker process per core, started once for all its runs, as ``betlake local start
    dask`` does);
  * baseline: one DuckDB SQL query computing the same figures over the same telemetry_raw.
Prints both, their ratios and whether each runner's figures agree with DuckDB row for row. On
dask it also reads the scheduler's task stream of the last run and estimates, from the task
timings, the pipeline's time on 8 workers.

    .venv/bin/python -m benchmarks.reprocess_day [--events 2000000] [--repeats 3] [--runner dask]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.common import DAY, PROJECT, REFERENCE, machine, own_cpu_seconds
from betlake.core.config import Settings
from betlake.core.contract import PARTITION_FORMAT
from betlake.core.ingest import ingest_files
from betlake.core.lake import Lake
from betlake.core.reference import REFERENCE_TABLES, read_reference_csv
from betlake.local.generate import TelemetrySpec, generate_telemetry
from streaming.runners import local_dask_cluster

DUCKDB_FIGURES = """
WITH ev AS (
    SELECT r.site_id, r.player_id, r.event_type, r.amount,
           time_bucket(INTERVAL 5 MINUTE, r.event_time, TIMESTAMPTZ '1970-01-01 00:00:00+00')
               AS window_start,
           coalesce(r.currency, s.currency) AS cur, (r.event_time AT TIME ZONE 'UTC')::DATE AS d,
           p.segment = 'vip' AS vip
    FROM telemetry_raw r
    LEFT JOIN bet_sites s USING (site_id)
    LEFT JOIN players p USING (player_id)
    WHERE r.event_date = DATE '{day}'
), priced AS (
    SELECT ev.*, CASE WHEN cur = 'EUR' THEN 1 ELSE f.eur_rate END AS rate
    FROM ev ASOF LEFT JOIN fx_rates f ON ev.cur = f.currency AND ev.d >= f.date
)
SELECT window_start, site_id, count(*) AS events,
       count(DISTINCT player_id) AS active_players,
       count(DISTINCT player_id) FILTER (WHERE vip) AS vip_players,
       count(*) FILTER (WHERE event_type = 'session_start') AS sessions,
       count(*) FILTER (WHERE event_type = 'bet_placed') AS bets,
       round_even(coalesce(sum(amount * rate) FILTER (WHERE event_type = 'bet_placed'), 0), 2)
           AS stake_eur,
       round_even(coalesce(sum(amount * rate) FILTER (WHERE event_type = 'bet_settled'), 0), 2)
           AS payout_eur,
       count(*) FILTER (WHERE amount IS NOT NULL AND rate IS NULL) AS unpriced_events
FROM priced GROUP BY ALL ORDER BY window_start, site_id
"""
GOLD_FIGURES = """
SELECT window_start, site_id, events, active_players, vip_players, sessions, bets, stake_eur,
       payout_eur, unpriced_events
FROM site_window_stats ORDER BY window_start, site_id
"""


def timed(step) -> float:
    began = time.perf_counter()
    step()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--runner", choices=["local", "dask"], default="local",
        help="dask: time the DaskRunner too (the local runner is always timed)",
    )  # fmt: skip
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="betlake-bench-"))
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home)
    env = {**os.environ, "BETLAKE_LAKE": str(work / "lake"), "DAGSTER_HOME": str(home)}
    settings = Settings.from_env(env | {"BETLAKE_REFERENCE": str(REFERENCE)})
    lake = Lake.of(settings)
    print(f"machine: {machine()}")

    telemetry = work / "day.jsonl"
    spec = TelemetrySpec(count=args.events, start=DAY, span=timedelta(days=1))
    lines = generate_telemetry(spec, settings.reference)
    seconds = timed(lambda: telemetry.write_text("".join(f"{line}\n" for _, line in lines)))
    print(f"generated {args.events:,} events in {seconds:.1f}s")
    for table in REFERENCE_TABLES:
        lake.overwrite(table, read_reference_csv(table, settings.reference, datetime.now(UTC)))
    began, cpu = time.perf_counter(), own_cpu_seconds()
    report = ingest_files(settings, [telemetry])
    seconds, cpu = time.perf_counter() - began, own_cpu_seconds() - cpu
    print(f"ingested: {report} in {seconds:.1f}s ({report.lines / seconds:,.0f} lines/s; CPU "
          f"{cpu:.1f}s, its worker processes included: {report.lines / cpu:,.0f} lines per "
          f"CPU second)")  # fmt: skip

    last = (DAY + timedelta(days=1) - timedelta(minutes=5)).strftime(PARTITION_FORMAT)
    command = [
        sys.executable, "-m", "dagster", "asset", "materialize", "-m", "betlake.definitions",
        "--select", "site_window_stats", "--partition-range", f"{DAY:%Y-%m-%d-%H:%M}...{last}",
    ]  # fmt: skip
    con = lake.connect()
    truth = con.execute(DUCKDB_FIGURES.format(day=DAY.date())).fetchall()

    import dagster as dg

    runners = ["local", "dask"] if args.runner == "dask" else ["local"]
    inner: dict[str, list[float]] = defaultdict(list)  # the Beam pipeline, inside the run
    runs: dict[str, list[float]] = defaultdict(list)  # the whole Dagster run
    agree: dict[str, bool] = {}
    duck: list[float] = []
    with ExitStack() as stack, dg.DagsterInstance.from_config(str(home)) as instance:
        envs = {runner: env | {"BETLAKE_RUNNER": runner} for runner in runners}
        if "dask" in envs:
            scheduler = stack.enter_context(local_dask_cluster(os.cpu_count() or 1))
            envs["dask"]["BETLAKE_DASK_SCHEDULER"] = scheduler
            record_task_stream(scheduler)
        for attempt in range(args.repeats):  # the runners alternate: both see the same load
            for runner, run_env in envs.items():
                began = time.time()
                runs[runner].append(
                    timed(lambda e=run_env: subprocess.run(command, env=e, check=True,
                                                           capture_output=True))
                )  # fmt: skip
                (latest,) = instance.fetch_materializations(
                    dg.AssetKey("site_window_stats"), limit=1
                ).records
                inner[runner].append(latest.asset_materialization.metadata["seconds"].value)
                con = lake.connect()
                agree[runner] = agree.get(runner, True) and (
                    truth == con.execute(GOLD_FIGURES).fetchall()
                )
                print(f"{runner} run {attempt + 1}: dagster run {runs[runner][-1]:.2f}s, "
                      f"pipeline {inner[runner][-1]:.2f}s")  # fmt: skip
                if runner == "dask" and attempt == args.repeats - 1:
                    task_stream_estimate(scheduler, began, inner[runner][-1])
            con = lake.connect()
            duck.append(timed(lambda c=con: c.sql(DUCKDB_FIGURES.format(day=DAY.date())).arrow()))
            print(f"duckdb {duck[-1]:.2f}s")
        run_count = len(instance.get_runs())
    gold_rows = lake.connect().execute("SELECT count(*) FROM site_window_stats").fetchone()[0]
    d = statistics.median(duck)
    print(f"\n{args.events:,} events, 288 windows, {gold_rows:,} gold rows, {run_count} runs")
    print(f"duckdb query (baseline)              median {d:6.2f}s")
    for runner in runners:
        i, r = statistics.median(inner[runner]), statistics.median(runs[runner])
        print(f"{runner:5} Beam pipeline in run         median {i:6.2f}s  ratio {i / d:5.2f}x")
        print(f"{runner:5} whole Dagster run            median {r:6.2f}s  ratio {r / d:5.2f}x")
        print(f"{runner:5} figures agree with DuckDB row for row: "
              f"{'yes' if agree[runner] else 'NO'}")  # fmt: skip
    if "dask" in runners:
        pipeline = statistics.median(inner["dask"]) / statistics.median(inner["local"])
        whole = statistics.median(runs["dask"]) / statistics.median(runs["local"])
        print(f"dask / local: pipeline {pipeline:4.2f}x, whole run {whole:4.2f}x")
    if not args.keep:
        shutil.rmtree(work)


def record_task_stream(scheduler: str) -> None:
    """Have the scheduler record its task stream from now on (it does once asked for it)."""
    from dask.distributed import Client

    with Client(scheduler, timeout=30) as client:
        client.get_task_stream()


def task_stream_estimate(scheduler: str, since: float, pipeline_seconds: float) -> None:
    """The last dask run's tasks, from the scheduler's task stream: work per kind of task, how
    it spread over the workers, and the pipeline's estimated time on 8 workers (the tasks'
    compute in waves of 8 plus what did not run in tasks: planning, the client, the commit's
    wait for the cluster)."""
    from dask.distributed import Client
    from dask.utils import key_split

    with Client(scheduler, timeout=30) as client:
        tasks = client.get_task_stream(start=since)
    kinds: dict[str, list[float]] = defaultdict(list)
    per_worker: dict[str, float] = defaultdict(float)
    for task in tasks:
        compute = sum(
            s["stop"] - s["start"] for s in task["startstops"] if s["action"] == "compute"
        )
        name = task["key"][0] if isinstance(task["key"], tuple) else task["key"]
        kinds[f"{key_split(name)} ({name[-6:]})"].append(compute)  # one stage: one name
        per_worker[task["worker"]] += compute
    first = min(s["start"] for t in tasks for s in t["startstops"])
    last = max(s["stop"] for t in tasks for s in t["startstops"])
    work = sum(per_worker.values())
    print(f"dask task stream of the last run: {len(tasks)} tasks, {work:.2f}s of compute over "
          f"{len(per_worker)} workers in {last - first:.2f}s of wall time")  # fmt: skip
    for worker, seconds in sorted(per_worker.items()):
        print(f"  worker {worker}: {seconds:.2f}s")
    waves = 0.0
    for kind, seconds in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
        longest = max(seconds)
        # tasks of one kind run side by side: on 8 workers, at best their sum / 8, at worst
        # the longest one (the stage cannot finish before it)
        waves += max(sum(seconds) / 8, longest)
        print(f"  {kind[:60]:60} {len(seconds):4} tasks {sum(seconds):7.2f}s "
              f"(longest {longest:.2f}s)")  # fmt: skip
    outside = pipeline_seconds - (last - first)
    estimate = outside + waves
    print(f"estimate on 8 workers: {outside:.2f}s outside tasks + {waves:.2f}s of task stages = "
          f"{estimate:.2f}s, {pipeline_seconds / estimate:.2f}x faster than this run")  # fmt: skip


if __name__ == "__main__":
    main()
