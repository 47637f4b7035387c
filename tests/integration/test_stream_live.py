"""The stream live at speed on a real broker, Prism and Delta tables: no drain, no restart."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from betlake.core.contract import SITE_WINDOW_STATS, TELEMETRY_RAW, TableSpec
from betlake.core.kafka import produce
from betlake.core.lake import Lake
from betlake.local.generate import TelemetrySpec, generate_telemetry
from tests.faults import (
    PARTITIONS,
    REFERENCE,
    fault_settings,
    figure_differences,
    gold_rows,
    kill_group,
    partition_of,
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
DRAIN_QUIET_SECONDS = 20  # longer than a loaded job takes to fire its first windows


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


def _events(start: datetime, minutes: int, count: int, seed: int, partitions: set[int]) -> list:
    """In-order valid events over ``minutes`` from ``start``, of the players in ``partitions``."""
    spec = TelemetrySpec(count, start, timedelta(minutes=minutes), seed=seed, disorder_seconds=1,
                         late_fraction=0, duplicate_fraction=0, malformed_fraction=0,
                         unknown_fraction=0)  # fmt: skip
    return [(key, line) for key, line in generate_telemetry(spec, REFERENCE)
            if partition_of(key) in partitions]  # fmt: skip


def _bronze_rows(lake: Lake) -> int:
    return lake.scan(TELEMETRY_RAW, columns=["event_id"]).num_rows


def _windows(lake: Lake, spec: TableSpec = TELEMETRY_RAW) -> set:
    """The windows a table has rows of."""
    return set(lake.scan(spec, columns=["window_start"]).column("window_start").to_pylist())


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not (met := condition()) and time.monotonic() < deadline:
        time.sleep(1)
    return met


def test_a_partition_ahead_does_not_close_a_window_another_still_fills(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Three partitions jump two hours ahead while the fourth is still inside window A: A's
    pane waits for the slowest partition and counts what it sends later. (Unpatched, Prism took
    the stage's watermark from whichever partition's read finished last: A fired and was
    forgotten on the others' watermark, and the slow partition's later events of A opened it
    afresh, a pane that gold's no-stale-overwrite rule rightly refused.)"""
    settings = fault_settings(str(tmp_path / "lake"), kafka_bootstrap, "skew",
                              **{**DEFAULTS, "BETLAKE_IDLE_TIMEOUT_SECONDS": "600"})  # fmt: skip
    prepare(settings)
    lake = Lake.of(settings)
    a = datetime.fromtimestamp(time.time() // 300 * 300, UTC) - timedelta(hours=3)  # window A
    every, slow = set(range(PARTITIONS)), {PARTITIONS - 1}
    ahead = a + timedelta(hours=2)  # past A's end + lateness + its tombstone's lateness
    phases = [
        _events(a, 4, 4_000, 31, every),
        _events(ahead, 1, 400, 32, every - slow),  # read while the slow partition has nothing
        _events(a + timedelta(minutes=4), 1, 4_000, 33, slow),  # on time for its partition
        _events(ahead, 1, 400, 34, slow),  # the slow partition catches up: A may close
    ]

    def window_a_complete() -> bool:
        gold = {key: row for key, row in gold_rows(lake).items() if key[0] == a}
        truth = {key: row for key, row in truth_rows(lake, settings.window_seconds).items()
                 if key[0] == a}  # fmt: skip
        return bool(truth) and not any(figure_differences(gold, truth, truth))

    with open(tmp_path / "job.log", "w") as log:
        job = start_job(settings, output=log)
        try:
            sent = 0
            for number, messages in enumerate(phases):
                for _ in produce(settings, settings.telemetry_topic, messages):
                    pass
                sent += len(messages)
                assert _wait_for(lambda count=sent: _bronze_rows(lake) >= count, 60), (
                    f"phase {number} not in bronze"
                )
                if number == 1:
                    time.sleep(10)  # time for the watermark to pass A on the three ahead
            _wait_for(window_a_complete, 60)
        finally:
            kill_group(job, signal.SIGTERM)
            job.wait(60)
    truth = {key: row for key, row in truth_rows(lake, settings.window_seconds).items()
             if key[0] == a}  # fmt: skip
    in_a = len(phases[0]) + len(phases[2])
    assert sum(row["events"] for row in truth.values()) == in_a, "bronze lacks A's events"
    missing, differ = figure_differences(gold_rows(lake), truth, truth)
    assert not missing and not differ, (
        f"window A: {len(missing)} of {len(truth)} sites missing from gold, {len(differ)} differ "
        f"(gold, truth): {list(differ.items())[:3]}; the job's log: {tmp_path / 'job.log'}"
    )


def test_a_read_at_an_idle_watermark_is_committed_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Once its partitions are idle, the watermark is the wall clock, to the microsecond, and a
    read's offsets may be committed from that time on; timers fire at the millisecond below
    it. The commit timer must still fire once: before, it fired again and again at the same
    offset (thousands of commits a minute) and a drained run never ended.

    The drain waits for the topic to be quiet longer than the first windows take to fire on a
    loaded machine: with 8 s, under two test processes, half the partitions drained before the
    later events came, and those stayed unread (rightly: a drained run reads no further)."""
    settings = fault_settings(str(tmp_path / "lake"), kafka_bootstrap, "idle",
                              **{**DEFAULTS, "BETLAKE_IDLE_TIMEOUT_SECONDS": "2"})  # fmt: skip
    prepare(settings)
    lake = Lake.of(settings)
    week_ago = datetime.now(UTC) - timedelta(days=7)
    every = set(range(PARTITIONS))
    first, then = _events(week_ago, 5, 400, 41, every), _events(week_ago, 5, 400, 42, every)
    for _ in produce(settings, settings.telemetry_topic, first):
        pass
    with open(tmp_path / "job.log", "w") as log:
        job = start_job(settings, drain_when_idle=DRAIN_QUIET_SECONDS, output=log)
        try:
            assert _wait_for(lambda: _bronze_rows(lake) >= len(first), 60), "first not read"
            # every partition idle, at the wall clock: the windows of ``first`` have fired (a
            # fixed sleep was too short on a loaded machine: a reader had not advanced yet)
            assert _wait_for(lambda: _windows(lake, SITE_WINDOW_STATS) >= _windows(lake), 60), (
                f"the windows of the first events never fired; the job's log: {tmp_path}/job.log"
            )
            for _ in produce(settings, settings.telemetry_topic, then):
                pass
            job.wait(90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the drained run did not end; its log: {tmp_path / 'job.log'}")
        finally:
            kill_group(job, signal.SIGKILL)
    assert job.returncode == 0, (tmp_path / "job.log").read_text()[-2000:]
    assert _bronze_rows(lake) == len(first) + len(then), (
        f"the job drained before the later events came; its log: {tmp_path / 'job.log'}"
    )
    late = lake.scan(TELEMETRY_RAW, columns=["arrived_late"]).column("arrived_late")
    assert late.to_pylist().count(True) == len(then), "the later reads were not at the wall clock"
