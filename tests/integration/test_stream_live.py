"""The stream live at speed on a real broker, Prism and Delta tables: no drain, no restart."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from betlake.core.kafka import produce
from betlake.core.lake import Lake
from betlake.local.generate import TelemetrySpec, generate_telemetry
from tests.faults import (
    fault_settings,
    figure_differences,
    gold_rows,
    kill_group,
    prepare,
    start_job,
    truth_rows,
)

pytestmark = pytest.mark.integration
RATE, SECONDS, SPEEDUP = 8_000, 40, 60  # event time runs 60x the wall clock
DEFAULTS = {  # the contract's: 5-minute windows, 15 minutes of lateness, 30 s of disorder
    "BETLAKE_WINDOW_SECONDS": "300",
    "BETLAKE_ALLOWED_LATENESS_SECONDS": "900",
    "BETLAKE_MAX_OUT_OF_ORDERNESS_SECONDS": "30",
    "BETLAKE_IDLE_TIMEOUT_SECONDS": "30",
}


def test_each_window_counts_the_read_that_closes_it(kafka_bootstrap: str, tmp_path: Path) -> None:
    """8,000 messages/s with event time at 60x the wall clock: a 5-minute window closes every
    5 s, and the read that moves the watermark past its end holds hundreds of its events.
    While the job runs, every closed window's figures in gold equal the truth over bronze's
    on-time events, to the cent (on Prism's GroupByKey most windows lacked that last read)."""
    settings = fault_settings(str(tmp_path / "lake"), kafka_bootstrap, "live", **DEFAULTS)
    prepare(settings)
    span = timedelta(seconds=SECONDS * SPEEDUP)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - span - timedelta(hours=1)
    messages = list(generate_telemetry(TelemetrySpec(RATE * SECONDS, start, span, seed=21),
                                       settings.reference))  # fmt: skip
    with open(tmp_path / "job.log", "w") as log:
        job = start_job(settings, output=log)
        try:
            time.sleep(15)  # the job is reading when the first message comes
            for _ in produce(settings, settings.telemetry_topic, messages, rate=RATE):
                pass
            time.sleep(20)  # the last closed windows' LATE panes (15 s of lateness at 60x)
        finally:
            kill_group(job, signal.SIGTERM)
            job.wait(60)
    lake = Lake.of(settings)
    truth = truth_rows(lake, settings.window_seconds)
    gold = gold_rows(lake)
    closed_before = start + span - timedelta(seconds=settings.window_seconds + 60)
    closed = [key for key in truth if key[0] + timedelta(seconds=300) <= closed_before]
    assert len({key[0] for key in closed}) >= 5, "too few windows closed to judge"
    missing, differ = figure_differences(gold, truth, closed)
    assert not missing and not differ, (
        f"{len(missing)} closed windows missing from gold, {len(differ)} of {len(closed)} differ "
        f"(gold, truth): {list(differ.items())[:3]}; the job's log: {tmp_path / 'job.log'}"
    )
