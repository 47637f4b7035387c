"""The streaming job end to end on a real Kafka broker, the Prism runner and real Delta tables."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from betlake.core.config import Settings
from betlake.core.contract import (
    SITE_WINDOW_STATS,
    TELEMETRY_RAW,
    TELEMETRY_REJECTED,
    RawBatch,
    validate,
)
from betlake.core.kafka import produce, stats_message
from betlake.core.lake import Lake
from betlake.local.generate import TelemetrySpec, generate_telemetry
from streaming.batch import reprocess
from streaming.job import run_stream
from tests.faults import start_job
from tests.kafka_topics import read_latest

pytestmark = pytest.mark.integration
START = datetime(2026, 11, 24, tzinfo=UTC)
FIGURES = [f.name for f in SITE_WINDOW_STATS.schema if f.name not in ("pane", "computed_at")]


def send(settings: Settings, spec: TelemetrySpec) -> list[str]:
    """Produce generated telemetry; return its lines."""
    messages = list(generate_telemetry(spec, settings.reference))
    for _ in produce(settings, settings.telemetry_topic, messages):
        pass
    return [line for _, line in messages]


def truth(lines: list[str]) -> tuple[set[str], Counter]:
    """The valid event ids and the rejection reasons the contract gives these lines."""
    checked = validate(
        RawBatch(lines, "file", datetime.now(UTC), [str(i) for i in range(len(lines))]),
        window_seconds=300,
        max_clock_skew_seconds=300,
    )
    ids = set(checked.events.column("event_id").to_pylist())
    return ids, Counter(checked.rejected.column("reason").to_pylist())


def gold(lake: Lake) -> dict[tuple, dict]:
    return {(r["window_start"], r["site_id"]): r for r in lake.scan(SITE_WINDOW_STATS).to_pylist()}


def assert_converged(settings: Settings, lines: list[str]) -> None:
    """Bronze has each valid event once, rejected every bad line with its reason, gold equals a
    batch recomputation wherever no event came too late, and the topic's latest equals gold."""
    lake = Lake.of(settings)
    ids, reasons = truth(lines)
    bronze = lake.scan(TELEMETRY_RAW, ["event_id", "arrived_late", "window_start"])
    stored = bronze.column("event_id").to_pylist()
    assert len(stored) == len(set(stored)), "an event is stored twice"
    assert set(stored) == ids
    rejected = lake.scan(TELEMETRY_REJECTED, ["reason"]).column("reason").to_pylist()
    assert Counter(rejected) == reasons

    streamed = gold(lake)
    assert streamed and {r["pane"] for r in streamed.values()} <= {"ON_TIME", "LATE"}
    latest = read_latest(settings, settings.stats_topic)
    for row in streamed.values():
        key, value = stats_message(row)
        assert latest[key] == json.loads(value)

    late_windows = {
        r["window_start"] for r in bronze.to_pylist() if r["arrived_late"]
    }  # fmt: skip
    reprocess(settings, START, START + timedelta(hours=2))
    batch = gold(lake)
    compared = 0
    for key, row in batch.items():
        if key[0] in late_windows:
            assert streamed.get(key, {"events": 0})["events"] <= row["events"]
            continue
        assert {f: streamed[key][f] for f in FIGURES} == {f: row[f] for f in FIGURES}, key
        compared += 1
    assert compared > 0 and set(streamed) <= set(batch)


def test_stream_end_to_end(stream_settings: Settings) -> None:
    lines = send(
        stream_settings,
        TelemetrySpec(count=6000, start=START, span=timedelta(hours=1), seed=3,
                      late_fraction=0.01, duplicate_fraction=0.05, malformed_fraction=0.02),
    )  # fmt: skip

    counters = run_stream(stream_settings, drain_when_idle=4)

    assert counters["events_in"] >= 6000 and counters["rejected"] > 0
    assert counters["on_time_panes"] > 0 and counters["published"] > 0
    assert_converged(stream_settings, lines)


def assert_all_gone(job_pid: int, output: str) -> None:
    """Nothing the job started outlives it: not its process group, not its Prism runner."""
    deadline = time.monotonic() + 10
    prism = [int(m) for m in re.findall(r"Prism runner \(pid (\d+)\)", output)]
    assert prism, output
    while time.monotonic() < deadline:
        alive = [pid for pid in prism if Path(f"/proc/{pid}").exists()
                 and "zombie" not in Path(f"/proc/{pid}/status").read_text()]  # fmt: skip
        try:
            os.killpg(job_pid, 0)
        except ProcessLookupError:
            if not alive:
                return
        time.sleep(0.2)
    raise AssertionError(f"left behind: group {job_pid}, Prism {prism}")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_restart_loses_nothing_and_doubles_nothing(stream_settings: Settings, stop) -> None:
    first = send(
        stream_settings,
        TelemetrySpec(count=4000, start=START, span=timedelta(minutes=40), seed=4),
    )
    job = start_job(stream_settings)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not gold(Lake.of(stream_settings)):
        time.sleep(1)
    assert gold(Lake.of(stream_settings)), "the stream published nothing"
    stopped_at = time.monotonic()
    os.killpg(job.pid, stop)  # as Ctrl-C or a service manager does: the whole process group
    output, _ = job.communicate(timeout=60)
    if stop == signal.SIGTERM:
        assert time.monotonic() - stopped_at < 10, output
        assert job.returncode == 0 and "stream stopped" in output, output
        assert "Traceback" not in output, output
    assert_all_gone(job.pid, output)

    second = send(
        stream_settings,
        TelemetrySpec(count=4000, start=START + timedelta(minutes=40),
                      span=timedelta(minutes=40), seed=5),
    )  # fmt: skip
    run_stream(stream_settings, drain_when_idle=4)

    assert_converged(stream_settings, first + second)


def test_stream_outlives_the_job_services_timeout(stream_settings: Settings, monkeypatch) -> None:
    """Beam watches a running job through the job service's state stream, which gRPC ends after
    --job_server_timeout (300 s by default): the job stopped itself then. With the timeout at
    8 s, the job still runs at 20 s, publishes what is sent after it, and stops cleanly."""
    monkeypatch.setenv("BETLAKE_PIPELINE_ARGS", "--job_server_timeout=8")
    job = start_job(stream_settings)
    time.sleep(20)
    assert job.poll() is None, job.communicate()[0]
    spec = TelemetrySpec(count=2000, start=START, span=timedelta(minutes=30), seed=7)
    send(stream_settings, spec)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and job.poll() is None and not gold(Lake.of(stream_settings)):
        time.sleep(1)
    assert job.poll() is None, job.communicate()[0]
    assert gold(Lake.of(stream_settings)), "the stream published nothing"
    os.killpg(job.pid, signal.SIGTERM)
    output, _ = job.communicate(timeout=60)
    assert job.returncode == 0 and "stream stopped" in output, output


def test_reprocess_publishes_corrections_for_changed_windows(
    stream_settings: Settings, tmp_path: Path
) -> None:
    from betlake.core.ingest import ingest_files

    lake = Lake.of(stream_settings)
    first = tmp_path / "first.jsonl"
    lines = [line for _, line in generate_telemetry(
        TelemetrySpec(count=3000, start=START, span=timedelta(hours=1), seed=6),
        stream_settings.reference)]  # fmt: skip
    first.write_text("\n".join(lines) + "\n")
    ingest_files(stream_settings, [first], show_progress=False)
    reprocess(stream_settings, START, START + timedelta(hours=1))
    before = gold(lake)
    assert read_latest(stream_settings, stream_settings.stats_topic).keys() == {
        stats_message(row)[0] for row in before.values()
    }

    late = tmp_path / "late.jsonl"  # two more bets on one site in two windows
    late.write_text("\n".join(json.dumps({
        "event_id": f"correction-{minute}", "event_type": "bet_placed",
        "event_time": f"2026-11-24T00:{minute:02d}:30Z", "player_id": "p00001",
        "site_id": "uk-royalspin", "amount": 10}) for minute in (12, 31)) + "\n")  # fmt: skip
    ingest_files(stream_settings, [late], show_progress=False)
    topic_before = read_latest(stream_settings, stream_settings.stats_topic)
    reprocess(stream_settings, START, START + timedelta(hours=1))

    after = gold(lake)
    latest = read_latest(stream_settings, stream_settings.stats_topic)
    changed = {k for k in latest if latest[k] != topic_before.get(k)}
    assert changed == {f"uk-royalspin|2026-11-24T00:{minute}:00Z" for minute in ("10", "30")}
    for row in after.values():
        key, value = stats_message(row)
        assert {k: v for k, v in latest[key].items() if k != "computed_at"} == {
            k: v for k, v in json.loads(value).items() if k != "computed_at"
        }
    assert all(row["pane"] == "BATCH" for row in latest.values())
