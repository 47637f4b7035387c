"""Benchmark: reprocess a day of telemetry as one Dagster run vs the same aggregation in DuckDB.

Generates N events over one day, ingests them, then times (median of --repeats runs each):
  * betlake: the whole day (288 partitions) as ONE Dagster run of site_window_stats
    (``dagster asset materialize --partition-range``), and the Beam pipeline inside it;
  * baseline: one DuckDB SQL query computing the same figures over the same telemetry_raw.
Prints both, their ratio and whether the two agree row for row.

    .venv/bin/python -m benchmarks.reprocess_day [--events 2000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from betlake.core.config import Settings
from betlake.core.contract import PARTITION_FORMAT
from betlake.core.ingest import ingest_files
from betlake.core.lake import Lake
from betlake.core.reference import REFERENCE_TABLES, read_reference_csv
from betlake.local.generate import TelemetrySpec, generate_telemetry

PROJECT = Path(__file__).resolve().parents[1]
DAY = datetime(2026, 11, 24, tzinfo=UTC)

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


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, Python {platform.python_version()}"


def timed(step) -> float:
    began = time.perf_counter()
    step()
    return time.perf_counter() - began


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children (worker processes)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="betlake-bench-"))
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home)
    env = {**os.environ, "BETLAKE_LAKE": str(work / "lake"), "DAGSTER_HOME": str(home)}
    settings = Settings.from_env(env | {"BETLAKE_REFERENCE": str(PROJECT / "data/reference")})
    lake = Lake.of(settings)
    print(f"machine: {machine()}")

    telemetry = work / "day.jsonl"
    spec = TelemetrySpec(count=args.events, start=DAY, span=timedelta(days=1))
    lines = generate_telemetry(spec, settings.reference)
    seconds = timed(lambda: telemetry.write_text("".join(f"{line}\n" for _, line in lines)))
    print(f"generated {args.events:,} events in {seconds:.1f}s")
    for table in REFERENCE_TABLES:
        lake.overwrite(table, read_reference_csv(table, settings.reference, datetime.now(UTC)))
    began, cpu = time.perf_counter(), cpu_seconds()
    report = ingest_files(settings, [telemetry])
    seconds, cpu = time.perf_counter() - began, cpu_seconds() - cpu
    print(f"ingested: {report} in {seconds:.1f}s ({report.lines / seconds:,.0f} lines/s; CPU "
          f"{cpu:.1f}s, its worker processes included: {report.lines / cpu:,.0f} lines per "
          f"CPU second)")  # fmt: skip

    last = (DAY + timedelta(days=1) - timedelta(minutes=5)).strftime(PARTITION_FORMAT)
    command = [
        sys.executable, "-m", "dagster", "asset", "materialize", "-m", "betlake.definitions",
        "--select", "site_window_stats", "--partition-range", f"{DAY:%Y-%m-%d-%H:%M}...{last}",
    ]  # fmt: skip

    def dagster_run() -> None:
        subprocess.run(command, env=env, check=True, capture_output=True)

    runs, duck = [], []
    for attempt in range(args.repeats):
        runs.append(timed(dagster_run))
        con = lake.connect()
        duck.append(
            timed(lambda c=con: c.sql(DUCKDB_FIGURES.format(day=DAY.date())).to_arrow_table())
        )
        print(f"run {attempt + 1}: dagster run {runs[-1]:.2f}s, duckdb {duck[-1]:.2f}s")

    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        inner = [
            record.asset_materialization.metadata["seconds"].value
            for record in instance.fetch_materializations(
                dg.AssetKey("site_window_stats"), limit=args.repeats
            ).records
        ]
        run_count = len(instance.get_runs())
    con = lake.connect()
    agree = (
        con.execute(DUCKDB_FIGURES.format(day=DAY.date())).fetchall()
        == con.execute(GOLD_FIGURES).fetchall()
    )
    gold_rows = con.execute("SELECT count(*) FROM site_window_stats").fetchone()[0]
    d, r, i = statistics.median(duck), statistics.median(runs), statistics.median(inner)
    print(f"\n{args.events:,} events, 288 windows, {gold_rows:,} gold rows, {run_count} runs")
    print(f"duckdb query (baseline)         median {d:6.2f}s")
    print(f"betlake Beam pipeline in run    median {i:6.2f}s  ratio {i / d:5.2f}x")
    print(f"betlake whole Dagster run       median {r:6.2f}s  ratio {r / d:5.2f}x")
    print(f"figures agree with DuckDB row for row: {'yes' if agree else 'NO'}")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
