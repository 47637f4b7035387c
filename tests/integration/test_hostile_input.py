"""The hostile corpus (tests/hostile.py) through both entries that validate: `betlake ingest`
(the real command in a subprocess) and the stream on the real broker. Each must end normally
with every valid event stored once and every other line rejected with its expected reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from betlake.core.config import Settings
from betlake.core.contract import TELEMETRY_RAW, TELEMETRY_REJECTED
from betlake.core.kafka import produce
from betlake.core.lake import Lake
from streaming.job import run_stream
from tests.hostile import corpus, readable
from tests.integration.conftest import PROJECT

pytestmark = pytest.mark.integration
Lines = list[tuple[bytes, str | None]]


def assert_stored(lake: Lake, lines: Lines) -> None:
    """Bronze holds each valid line once (as its payload), rejected each other line with its
    expected reason, and nothing else."""
    valid = {
        json.loads(data, parse_int=str)["event_id"]: data.decode()
        for data, reason in lines
        if not reason
    }
    bronze = lake.scan(TELEMETRY_RAW, ["event_id", "payload"]).to_pylist()
    assert len(bronze) == len(valid)
    assert {row["event_id"]: row["payload"] for row in bronze} == valid
    rejected = lake.scan(TELEMETRY_REJECTED, ["reason", "payload"]).to_pylist()
    assert Counter((row["reason"], row["payload"]) for row in rejected) == Counter(
        (reason, readable(data)) for data, reason in lines if reason
    )


def test_ingest_stores_valid_lines_and_rejects_hostile_ones(
    settings: Settings, tmp_path: Path
) -> None:
    lines = corpus(PROJECT / "data" / "reference")
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"".join(data + b"\n" for data, _ in lines))
    env = {**os.environ, "BETLAKE_LAKE": settings.lake,
           "BETLAKE_REFERENCE": str(settings.reference)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "betlake.cli", "ingest", str(path)],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rejected = sum(1 for _, reason in lines if reason)
    assert f"{len(lines) - rejected} events stored, 0 duplicates skipped, {rejected} rejected" in (
        done.stdout
    )
    assert_stored(Lake.of(settings), lines)


def test_stream_stores_valid_messages_and_rejects_hostile_ones(stream_settings: Settings) -> None:
    lines = corpus(stream_settings.reference)
    topic = stream_settings.telemetry_topic
    for _ in produce(stream_settings, topic, [(None, data) for data, _ in lines]):
        pass

    counters = run_stream(stream_settings, drain_when_idle=4)  # raises if the pipeline failed

    assert counters["messages_in"] == len(lines)
    assert counters["rejected"] == sum(1 for _, reason in lines if reason)
    assert counters["on_time_panes"] > 0
    assert_stored(Lake.of(stream_settings), lines)
