"""Dagster runs started from the command line: one run on the local instance, shown as a
progress line, its Dagster log kept in the run (printed with ``--verbose``), and what it did
read back from the run's own events for a one-line summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from betlake.core.config import BetlakeError, Settings

RUN_ID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


def dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME, default ``./dagster_home``; it must hold the instance's dagster.yaml."""
    home = settings.dagster_home
    if not (home / "dagster.yaml").is_file():
        raise BetlakeError(
            f"no Dagster instance at {home} (run from the project root or set DAGSTER_HOME)"
        )
    return home


def open_instance(settings: Settings) -> dg.DagsterInstance:
    """The local Dagster instance of ``settings``."""
    return dg.DagsterInstance.from_config(str(dagster_home(settings)))


@dataclass
class RunOutcome:
    """What one run did, from its events: its id, whether it succeeded, the metadata of the
    first materialization of each asset, and its asset checks (name -> passed)."""

    run_id: str
    success: bool
    link: str
    materialized: dict[str, dict] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)


def outcome_of(instance: dg.DagsterInstance, run_id: str, settings: Settings) -> RunOutcome:
    """Read a run's result back from the instance."""
    run = instance.get_run_by_id(run_id)
    outcome = RunOutcome(
        run_id,
        run is not None and run.status == dg.DagsterRunStatus.SUCCESS,
        f"{settings.dagster_url}/runs/{run_id}",
    )
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            done = event.step_materialization_data.materialization
            name = done.asset_key.to_user_string()
            outcome.partitions[name] = outcome.partitions.get(name, 0) + 1
            outcome.materialized.setdefault(
                name, {key: value.value for key, value in done.metadata.items()}
            )
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            outcome.checks[evaluation.check_name] = evaluation.passed
    return outcome


def run_assets(
    settings: Settings,
    selection: list[str],
    console: Console,
    partition_range: tuple[str, str] | None = None,
    verbose: bool = False,
    what: str = "running",
    steps: int | None = None,
) -> RunOutcome:
    """Materialize ``selection`` (over ``partition_range``) in one run on the local instance, as
    ``dagster asset materialize`` does, with a progress line (``steps``: materializations
    expected); the Dagster log is printed only when ``verbose``. A failed run raises with the
    last lines of its log and the run's link."""
    home = dagster_home(settings)
    command = [
        sys.executable, "-m", "dagster", "asset", "materialize",
        "-m", "betlake.definitions", "--select", ",".join(selection),
    ]  # fmt: skip
    if partition_range:
        command += ["--partition-range", "...".join(partition_range)]
    process = subprocess.Popen(
        command,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    tail: deque[str] = deque(maxlen=30)
    run_ids: list[str] = []
    columns = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
    if steps:
        columns.insert(2, BarColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(what, total=steps)
        reader = threading.Thread(
            target=_follow,
            args=(process, tail, run_ids, verbose, console, lambda: progress.advance(task)),
            daemon=True,
        )
        reader.start()
        while reader.is_alive():
            reader.join(0.2)
            if run_ids:
                progress.update(task, description=f"{what} (run {run_ids[0][:8]})")
        process.wait()
    if not run_ids:
        raise BetlakeError(
            f"the Dagster run of {', '.join(selection)} did not start:\n" + "\n".join(tail)
        )
    outcome = outcome_of(open_instance(settings), run_ids[0], settings)
    if process.returncode or not outcome.success:
        failed = [name for name, passed in outcome.checks.items() if not passed]
        why = f" (failed checks: {', '.join(failed)})" if failed else ""
        shown = "" if verbose else "; last lines of its log:\n" + "\n".join(list(tail)[-12:])
        raise BetlakeError(
            f"the Dagster run of {', '.join(selection)} failed{why}: {outcome.link}{shown}"
        )
    return outcome


def _follow(process, tail, run_ids, verbose, console, materialized) -> None:
    """Read the run's log lines: keep the last ones, note the run id and each materialization,
    print them when ``verbose``."""
    for line in process.stdout:
        line = line.rstrip("\n")
        tail.append(line)
        if not run_ids and (found := RUN_ID.search(line)):
            run_ids.append(found.group())
        if "ASSET_MATERIALIZATION" in line:
            materialized()
        if verbose:
            console.print(line, markup=False, highlight=False)
