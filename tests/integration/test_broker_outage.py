"""The streaming job waits out a Kafka outage: the broker stopped for 30 s during a run, then
started again on the same port, while a paced producer keeps sending."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from betlake.core.config import Settings
from betlake.core.contract import TELEMETRY_RAW
from betlake.core.lake import Lake
from betlake.local import broker
from betlake.local.generate import TelemetrySpec, generate_telemetry
from streaming.job import run_stream
from tests.faults import start_job, stream_env
from tests.integration.conftest import PROJECT, topic_settings
from tests.integration.test_stream import START, assert_converged, truth

pytestmark = pytest.mark.integration
RATE, PRODUCE_SECONDS = 300, 40  # events a second, for this long
OUTAGE_AFTER, OUTAGE_SECONDS = 15, 30


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A broker of this test's own (it gets stopped and started): (bootstrap, home)."""
    home = tmp_path / "kafka"
    bootstrap = f"127.0.0.1:{broker.free_port_pair()}"
    broker.start(bootstrap, home=home, timeout=180)
    try:
        yield bootstrap, home
    finally:
        broker.stop(home=home)


def generate_process(settings: Settings, spec: TelemetrySpec, log: Path) -> subprocess.Popen:
    """``betlake generate --to kafka`` of ``spec`` at RATE events a second."""
    args = ["--count", str(spec.count), "--rate", str(RATE), "--start", spec.start.isoformat(),
            "--span", f"{spec.span.total_seconds():.0f}s", "--seed", str(spec.seed)]  # fmt: skip
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "betlake.cli", "generate", "--to", "kafka", *args],
            cwd=PROJECT, env=stream_env(settings), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def bronze_ids(settings: Settings) -> set[str]:
    return set(Lake.of(settings).scan(TELEMETRY_RAW, ["event_id"]).column("event_id").to_pylist())


def test_stream_waits_out_a_broker_restart(
    loaded_lake: Lake, settings: Settings, own_broker: tuple[str, Path], tmp_path: Path
) -> None:
    bootstrap, home = own_broker
    stream = topic_settings(loaded_lake, settings, bootstrap, "outage")
    spec = TelemetrySpec(
        count=RATE * PRODUCE_SECONDS, start=START, span=timedelta(hours=1), seed=11
    )
    lines = [line for _, line in generate_telemetry(spec, stream.reference)]
    valid, _ = truth(lines)
    job = start_job(stream)
    producer = generate_process(stream, spec, tmp_path / "producer.log")
    with ThreadPoolExecutor(1) as pool:
        output = pool.submit(job.stdout.read)  # drained as it comes: the pipe never fills
        try:
            time.sleep(OUTAGE_AFTER)
            assert broker.stop(home=home), "the broker was not running"
            time.sleep(OUTAGE_SECONDS)
            broker.start(bootstrap, home=home, timeout=120)
            assert job.poll() is None, "the job exited during the outage"

            assert producer.wait(timeout=120) == 0, (tmp_path / "producer.log").read_text()
            deadline = time.monotonic() + 90
            while bronze_ids(stream) != valid and time.monotonic() < deadline:
                assert job.poll() is None, "the job exited after the outage"
                time.sleep(2)
            assert bronze_ids(stream) == valid, "the running job did not catch up"
            stopped_at = time.monotonic()
            job.send_signal(signal.SIGTERM)
            assert job.wait(timeout=30) == 0
            assert time.monotonic() - stopped_at < 10
        finally:
            for process in (job, producer):
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            log = output.result(timeout=10)
            print(log)  # shown when the test fails
    assert f"waiting for Kafka at {bootstrap}" in log, log
    assert "stream stopped" in log, log

    run_stream(stream, drain_when_idle=4)  # fires the windows still open
    assert_converged(stream, lines)
