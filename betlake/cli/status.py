"""``betlake status``: the state of the system on one screen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
from rich.console import Console
from rich.table import Table

from betlake.core.config import BetlakeError, Settings
from betlake.core.lake import Lake
from betlake.core.status import bronze_facts, consumer_lag, gold_facts, pending_corrections
from betlake.defs.corrections import GOLD, RANGE_END, RANGE_START, reprocess_job
from betlake.local.services import SERVICES


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S} UTC"


def last_reprocessing(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    """The latest run that recomputed windows of site_window_stats (by hand, by the late-data
    sensor, by the nightly backfill)."""
    for run in instance.get_runs(limit=200):
        if run.job_name == reprocess_job.name or GOLD in (run.asset_selection or ()):
            return run
    return None


def show_status(settings: Settings, console: Console) -> None:
    """Print services, the stream's position, bronze, gold, pending corrections and the last
    reprocessing run."""
    lake = Lake(settings.lake)
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("[bold]services", "")
    for name, service in sorted(SERVICES.items()):
        table.add_row(f"  {name}", service.status(settings))

    table.add_row("[bold]stream", f"group reading {settings.telemetry_topic}")
    lags = consumer_lag(settings)
    if lags is None:
        table.add_row("  consumer lag", f"Kafka at {settings.kafka_bootstrap} does not answer")
    for lag in lags or []:
        table.add_row(f"  partition {lag.partition}",
                      f"lag {lag.lag:,} (committed {lag.committed:,} of {lag.end:,})")  # fmt: skip
    gold = gold_facts(lake)
    fired = "-" if gold.last_stream_window is None else (
        f"{gold.last_stream_window:%Y-%m-%d %H:%M} UTC ({gold.last_stream_pane})")  # fmt: skip
    table.add_row("  last fired window", fired)

    bronze = bronze_facts(lake)
    table.add_row("[bold]bronze", f"telemetry_raw {bronze.rows:,} rows")
    table.add_row("  latest event", _when(bronze.last_event))
    table.add_row("  last arrival", _when(bronze.last_arrival))
    table.add_row("[bold]gold", f"site_window_stats {gold.rows:,} rows")
    table.add_row("  latest window", _when(gold.last_window))

    pending = pending_corrections(lake, settings)
    width = timedelta(seconds=settings.window_seconds)
    windows = sum(int((b - a) / width) for a, b in pending)
    ranges = ", ".join(f"[{a:%Y-%m-%d %H:%M}, {b:%H:%M})" for a, b in pending[:5])
    more = f" and {len(pending) - 5} more" if len(pending) > 5 else ""
    table.add_row("[bold]pending corrections",
                  f"{windows} windows: {ranges}{more}" if pending else "none")  # fmt: skip

    last_run, link = _last_run(settings)
    table.add_row("[bold]last reprocessing", last_run)
    console.print(f"[bold]betlake[/bold] at {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC, "
                  f"lake {settings.lake}")  # fmt: skip
    console.print(table)
    if link:
        console.print(f"  the last reprocessing run: {link}", soft_wrap=True)


def _last_run(settings: Settings) -> tuple[str, str | None]:
    """The last reprocessing run in words, and its link in the UI."""
    from betlake.cli.runs import open_instance, outcome_of

    try:
        instance = open_instance(settings)
    except BetlakeError as error:
        return str(error), None
    run = last_reprocessing(instance)
    if run is None:
        return "none yet", None
    first = run.tags.get(RANGE_START) or run.tags.get("dagster/partition", "?")
    last = run.tags.get(RANGE_END) or first
    record = instance.get_run_record_by_id(run.run_id)
    ended = record.end_time if record else None
    when = "" if ended is None else f", ended {datetime.fromtimestamp(ended, UTC):%Y-%m-%d %H:%M}"
    done = outcome_of(instance, run.run_id, settings)
    gold = done.materialized.get(GOLD.to_user_string(), {})
    changed = f", {gold['rows_changed']:,} rows changed" if "rows_changed" in gold else ""
    return f"{run.status.value} {first}...{last}{when}{changed}", done.link
