"""Each peer over a small generated topic on a real broker, checked against the contract's
own count of the distinct valid events. Not in CI (pytest's testpaths are tests/): the peers'
venvs are built from the package registry on first use. Run it by hand:

    .venv/bin/python -m pytest benchmarks/peers -q
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from benchmarks.peers import PEERS, run_peer
from benchmarks.stream_throughput import checked_messages
from betlake.core.config import Settings
from betlake.core.kafka import ensure_topic, produce
from betlake.local.generate import TelemetrySpec
from tests.integration.conftest import kafka_bootstrap  # noqa: F401 (the session broker)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def backlog(kafka_bootstrap: str) -> tuple[Settings, int, int]:  # noqa: F811
    """Settings naming a topic of 5,000 generated events over 30 minutes; its message count and
    how many distinct valid events it holds, by the contract's validation."""
    settings = Settings.from_env({"BETLAKE_KAFKA_BOOTSTRAP": kafka_bootstrap,
                                  "BETLAKE_TELEMETRY_TOPIC": "peers-telemetry"})  # fmt: skip
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    spec = TelemetrySpec(5_000, start, timedelta(minutes=30), seed=5)
    messages, _, valid = checked_messages(spec, settings.window_seconds)
    ensure_topic(settings, settings.telemetry_topic)
    *_, sent = produce(settings, settings.telemetry_topic, messages)
    assert sent == len(messages)
    return settings, len(messages), valid


@pytest.mark.parametrize("name", sorted(PEERS))
def test_peer_counts_every_valid_event_once(backlog: tuple[Settings, int, int], name: str):
    settings, messages, valid = backlog
    figures = run_peer(name, settings, timeout=900)
    assert figures["messages"] == messages
    assert figures["valid"] == valid
    assert figures["duplicates"] > 0 and figures["malformed"] > 0
    assert figures["windows"] > 0 and figures["events_per_s"] > 0
    if name == "quix":  # .final() never emits the windows still open at the end
        assert figures["in_windows"] + figures["late"] < valid
    else:
        assert figures["in_windows"] + figures["late"] == valid
