"""Integration fixtures: a real Kafka broker (once per session, on free ports), a real
Dagster instance, and the test settings exported to the environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from betlake import broker
from betlake.config import Settings


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
