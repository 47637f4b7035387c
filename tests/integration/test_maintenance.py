"""The lake's upkeep job and its nightly schedule: small files compacted, replaced files
vacuumed, every row kept (recounted from the batches written)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from betlake.core.config import Settings
from betlake.core.contract import SITE_WINDOW_STATS, TELEMETRY_RAW
from betlake.core.lake import Lake
from betlake.defs.maintenance import maintain_lake, maintain_schedule
from betlake.defs.resources import BetlakeResource
from tests.integration.test_compaction import bronze_batches

pytestmark = pytest.mark.integration


def test_maintain_lake_compacts_and_vacuums_and_keeps_every_row(settings) -> None:
    lake = Lake.of(settings)
    batches, _ = bronze_batches(settings, 12)
    for batch in batches:
        lake.append(TELEMETRY_RAW, batch)
    table_dir = Path(settings.lake) / TELEMETRY_RAW.name
    written = len(list(table_dir.rglob("*.parquet")))
    result = maintain_lake.execute_in_process(
        run_config={"ops": {"compact_and_vacuum": {"config": {"retention_hours": 0}}}},
        resources={"betlake": BetlakeResource(lake_root=settings.lake)},
    )
    assert result.success
    dates = len(set(pa.concat_tables(batches).column("event_date").to_pylist()))
    assert written >= len(batches) and len(lake.open(TELEMETRY_RAW.name).file_uris()) == dates
    assert len(list(table_dir.rglob("*.parquet"))) == dates  # the replaced files are gone
    expected = pa.concat_tables(batches)
    assert lake.connect().execute("SELECT count(*) FROM telemetry_raw").fetchone() == (
        expected.num_rows,
    )


def test_maintenance_gives_an_older_table_its_specs_properties(tmp_path: Path) -> None:
    """A streamed table made before it kept a short log (at Delta's 30 days of log) is given
    it by the upkeep; what it holds is untouched."""
    lake = Lake(str(tmp_path / "lake"))
    DeltaTable.create(lake.uri(SITE_WINDOW_STATS.name), SITE_WINDOW_STATS.schema,
                      partition_by=list(SITE_WINDOW_STATS.partition_by))  # fmt: skip
    assert lake.open(SITE_WINDOW_STATS.name).metadata().configuration == {}
    lake.maintain(SITE_WINDOW_STATS.name)
    configuration = lake.open(SITE_WINDOW_STATS.name).metadata().configuration
    assert configuration == {"delta.logRetentionDuration": SITE_WINDOW_STATS.history}
    lake.maintain(SITE_WINDOW_STATS.name)  # once given, not again
    assert lake.version(SITE_WINDOW_STATS.name) == 1


def test_the_upkeep_goes_on_when_cleaning_the_log_fails(
    settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another cleaner (a stream's compactor) deleting the same log entries at once makes the
    cleaning raise: the upkeep logs it and finishes, as a longer log costs only time."""
    lake = Lake.of(settings)
    batches, _ = bronze_batches(settings, 2)
    for batch in batches:
        lake.append(TELEMETRY_RAW, batch)

    def entry_already_gone(table: DeltaTable) -> None:
        raise FileNotFoundError("00000000000000000001.json")

    monkeypatch.setattr(DeltaTable, "cleanup_metadata", entry_already_gone)
    done = lake.maintain(TELEMETRY_RAW.name, retention_hours=0)
    assert done["files_removed"] >= len(batches)  # compacted and vacuumed all the same
    assert "cleaning the log of telemetry_raw failed" in caplog.text


def test_the_upkeep_runs_every_night_on_its_configured_cron() -> None:
    assert maintain_schedule(Settings()).cron_schedule == "0 3 * * *"
    settings = Settings.from_env({"BETLAKE_MAINTAIN_CRON": "0 4 * * 0"})
    schedule = maintain_schedule(settings)
    assert schedule.cron_schedule == "0 4 * * 0"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
