"""Shared fixtures: a tiny hand-written reference set, a lake in a temporary folder, and the
batch runners (a real dask LocalCluster, started once per session)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from betlake.core.config import Settings
from betlake.core.lake import Lake
from betlake.core.reference import REFERENCE_TABLES, read_reference_csv
from streaming.runners import local_dask_cluster

# A failed test shows what the stream logged at INFO too (its reads, drains and commits).
logging.getLogger("betlake.stream").setLevel(logging.INFO)

REFERENCE_CSV = {
    "bet_sites": """site_id,name,brand,country,currency,timezone
s-gb,GB Site,Brand One,GB,GBP,Europe/London
s-jp,JP Site,Brand Two,JP,JPY,Asia/Tokyo
s-ie,IE Site,Brand One,IE,EUR,Europe/Dublin
""",
    "players": """player_id,site_id,country,segment,registered_at
p1,s-gb,GB,vip,2025-01-01T00:00:00Z
p2,s-gb,GB,regular,2025-02-01T00:00:00Z
p3,s-ie,IE,vip,2025-03-01T00:00:00Z
p4,s-jp,JP,new,2026-11-01T00:00:00Z
""",
    # GBP has no rate on 2026-11-24 (falls back to 11-23); JPY has none before 11-25; no CHF.
    "fx_rates": """date,currency,eur_rate
2026-11-23,GBP,1.20
2026-11-25,GBP,1.10
2026-11-25,JPY,0.0060
2026-11-24,USD,0.90
""",
}


def write_reference_csv(folder: Path, **overrides: str) -> Path:
    """The hand-written reference files (optionally some replaced) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in {**REFERENCE_CSV, **overrides}.items():
        (folder / f"{name}.csv").write_text(text)
    return folder


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings pointing at an empty lake and the hand-written reference files."""
    reference = write_reference_csv(tmp_path / "reference")
    return Settings.from_env(
        {
            "BETLAKE_LAKE": str(tmp_path / "lake"),
            "BETLAKE_REFERENCE": str(reference),
            "DAGSTER_HOME": str(tmp_path / "dagster_home"),  # never the project's instance
        }
    )


@pytest.fixture
def loaded_lake(settings: Settings) -> Lake:
    """The lake with the reference tables loaded."""
    lake = Lake.of(settings)
    for spec in REFERENCE_TABLES:
        lake.overwrite(spec, read_reference_csv(spec, settings.reference, datetime.now(UTC)))
    return lake


@pytest.fixture(scope="session")
def dask_scheduler() -> Iterator[str]:
    """The address of a real dask LocalCluster (2 worker processes) living as long as the
    test session."""
    with local_dask_cluster(workers=2) as address:
        yield address


@pytest.fixture(params=["local", "dask"])
def batch_settings(
    request: pytest.FixtureRequest, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The test settings on each batch runner (dask: on the session's LocalCluster), also
    exported, as a Dagster run reads them from the environment."""
    scheduler = request.getfixturevalue("dask_scheduler") if request.param == "dask" else None
    monkeypatch.setenv("BETLAKE_RUNNER", request.param)
    if scheduler:
        monkeypatch.setenv("BETLAKE_DASK_SCHEDULER", scheduler)
    return replace(settings, runner=request.param, dask_scheduler=scheduler)
