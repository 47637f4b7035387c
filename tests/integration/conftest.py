"""Integration fixtures: a real Kafka broker, NATS server and Pub/Sub emulator (each once per
session, on free ports, started only when a test asks for it), a real Dagster instance, the
test settings exported to the environment, and settings for a stream test (its own topics on the
session broker)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from betlake.core.config import Settings
from betlake.core.kafka import ensure_topic
from betlake.core.lake import Lake
from betlake.core.reference import REFERENCE_TABLES, read_reference_csv
from betlake.local import broker
from betlake.local import nats as nats_server
from betlake.local import pubsub as pubsub_emulator
from betlake.local.daemon import DaemonError

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bootstrap address of a broker that lives as long as the test session."""
    home = tmp_path_factory.mktemp("kafka")
    bootstrap = f"127.0.0.1:{broker.free_port_pair()}"
    broker.start(bootstrap, home=home, timeout=180)
    try:
        yield bootstrap
    finally:
        broker.stop(home=home)


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a NATS server with JetStream that lives as long as the test session."""
    home = tmp_path_factory.mktemp("nats")
    url = f"nats://127.0.0.1:{broker.free_port_pair()}"
    nats_server.start(url, home=home)
    try:
        yield url
    finally:
        nats_server.stop(home=home)


@pytest.fixture(scope="session")
def pubsub_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a Pub/Sub emulator that lives as long as the test session (the test fails,
    saying why, where the Google Cloud SDK or its emulator is missing)."""
    home = tmp_path_factory.mktemp("pubsub")
    host = f"127.0.0.1:{broker.free_port_pair()}"
    try:
        pubsub_emulator.start(host, home=home)
    except DaemonError as error:
        pytest.fail(f"no Pub/Sub emulator: {error}")
    try:
        yield host
    finally:
        pubsub_emulator.stop(home=home)


@pytest.fixture
def instance(tmp_path: Path):
    """A real Dagster instance (SQLite) in a temporary DAGSTER_HOME."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test settings exported, as the Dagster resource reads them from the environment."""
    monkeypatch.setenv("BETLAKE_LAKE", settings.lake)
    monkeypatch.setenv("BETLAKE_REFERENCE", str(settings.reference))
    return settings


def topic_settings(lake: Lake, settings: Settings, bootstrap: str, name: str) -> Settings:
    """Test settings on the broker at ``bootstrap``, with topics of their own (after ``name``)
    and the sample reference data (which the generator's players use) loaded in ``lake``."""
    env = {
        "BETLAKE_LAKE": settings.lake,
        "BETLAKE_REFERENCE": str(PROJECT / "data" / "reference"),
        "BETLAKE_KAFKA_BOOTSTRAP": bootstrap,
        "BETLAKE_TELEMETRY_TOPIC": f"telemetry-{name}",
        "BETLAKE_STATS_TOPIC": f"stats-{name}",
        "DAGSTER_HOME": str(settings.dagster_home),
    }
    stream = Settings.from_env(env)
    for spec in REFERENCE_TABLES:
        lake.overwrite(spec, read_reference_csv(spec, stream.reference, datetime.now(UTC)))
    ensure_topic(stream, stream.telemetry_topic)
    return stream


@pytest.fixture
def stream_settings(loaded_lake: Lake, settings: Settings, kafka_bootstrap: str, request):
    """Test settings on the session broker, with topics of this test's own."""
    name = request.node.name.replace("[", "-").replace("]", "")
    return topic_settings(loaded_lake, settings, kafka_bootstrap, name)
