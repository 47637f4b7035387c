"""The Dagster code location on a real (temporary, SQLite) instance and real Delta tables."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.dataset as ds

from betlake.core.config import Settings
from betlake.core.contract import BET_SITES, SITE_WINDOW_STATS
from betlake.core.lake import Lake
from betlake.defs.gold import site_window_stats_asset, window_partitions
from betlake.defs.reference import reference_assets, site_currencies_have_rates
from betlake.defs.resources import BetlakeResource
from streaming.batch import reprocess
from tests.conftest import write_reference_csv
from tests.integration.test_site_window_stats import (
    EXPECTED,
    A,
    B,
    gold_rows,
    ingest_scenario,
    scenario_file,
)

PROJECT = Path(__file__).resolve().parents[2]
site_window_stats = site_window_stats_asset(window_partitions(Settings()))


def load_reference(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*reference_assets, site_currencies_have_rates],
        instance=instance,
        resources={"betlake": BetlakeResource()},
        raise_on_error=False,
    )


def test_reference_assets_load_and_pass_their_checks(env: Settings, instance) -> None:
    result = load_reference(instance)

    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "unique_site_id": True,
        "known_currencies": True,
        "unique_player_id": True,
        "known_segments": True,
        "unique_date_currency": True,
        "positive_rates": True,
        "site_currencies_have_rates": True,
    }
    lake = Lake.of(env)
    assert sorted(lake.scan(BET_SITES).column("site_id").to_pylist()) == ["s-gb", "s-ie", "s-jp"]


def test_bad_reference_file_fails_loudly_and_keeps_the_last_good_table(
    env: Settings, instance
) -> None:
    assert load_reference(instance).success
    write_reference_csv(
        env.reference,
        bet_sites="site_id,name,brand,country,currency,timezone\n"
        "s-gb,GB Site,B,GB,GBP,Europe/London\ns-gb,Twin,B,GB,gbp,Europe/London\n",
        fx_rates="date,currency,eur_rate\n2026-11-24,USD,-0.9\n",
    )

    result = load_reference(instance)

    assert not result.success
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"unique_site_id", "known_currencies", "positive_rates"}
    assert Lake.of(env).scan(BET_SITES).num_rows == 3  # the good table is still there


def test_partition_range_run_of_a_day_replaces_exactly_that_day(
    env: Settings, batch_settings: Settings, loaded_lake: Lake, instance, tmp_path: Path
) -> None:
    ingest_scenario(env, tmp_path)
    reprocess(env, A, datetime(2026, 11, 25, 0, 10, tzinfo=UTC))  # on the local runner
    outside = gold_rows(loaded_lake)[-1]  # B..C is outside the day run below
    noon = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    stale = [
        {**outside, "window_start": start, "window_end": start + (B - A), "site_id": "s-gone",
         "computed_at": datetime.now(UTC), "window_date": start.date()}
        for start in (A, noon)
    ]  # fmt: skip
    loaded_lake.append(
        SITE_WINDOW_STATS, pa.Table.from_pylist(stale, schema=SITE_WINDOW_STATS.schema)
    )
    after_day = loaded_lake.scan(SITE_WINDOW_STATS, where=ds.field("window_start") >= B)
    assert len(gold_rows(loaded_lake)) == 7

    result = dg.materialize(
        [site_window_stats],
        instance=instance,
        resources={"betlake": BetlakeResource()},
        tags={
            "dagster/asset_partition_range_start": "2026-11-24-00:00",
            "dagster/asset_partition_range_end": "2026-11-24-23:55",
        },
    )

    assert result.success and len(instance.get_runs()) == 1
    assert gold_rows(loaded_lake) == EXPECTED  # the stale rows of the day are gone
    # the rows after the day are the very rows written before (same computed_at)
    assert loaded_lake.scan(SITE_WINDOW_STATS, where=ds.field("window_start") >= B).sort_by(
        "site_id"
    ) == after_day.sort_by("site_id")
    materialized = instance.get_materialized_partitions(dg.AssetKey("site_window_stats"))
    assert materialized == {f"2026-11-24-{m // 60:02d}:{m % 60:02d}" for m in range(0, 1440, 5)}
    (event,) = result.get_asset_materialization_events()[:1]
    metadata = event.materialization.metadata
    assert metadata["rows"].value == 3
    assert metadata["events"].value == 12
    assert metadata["windows"].value == 288


def betlake_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "betlake.cli", *args],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_reprocess_and_query_commands_end_to_end(settings: Settings, tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "BETLAKE_LAKE": settings.lake,
        "BETLAKE_REFERENCE": str(settings.reference),
        "COLUMNS": "200",
    }
    telemetry = scenario_file(tmp_path)

    for args in (["reference"], ["ingest", str(telemetry)]):
        done = betlake_cli(*args, env=env)
        assert done.returncode == 0, done.stderr
    done = betlake_cli("reprocess", "--start", "2026-11-24T23:55", "--end", "2026-11-25T00:05",
                       env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "recomputed 2 windows" in done.stdout

    query = betlake_cli(
        "query", "SELECT sum(events) AS e, sum(stake_eur) AS s FROM site_window_stats", env=env
    )
    assert query.returncode == 0, query.stderr
    assert "15" in query.stdout and str(sum(r["stake_eur"] for r in EXPECTED)) in query.stdout
    assert sum(r["stake_eur"] for r in EXPECTED) == Decimal("38.21")

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS] * 2
        assert runs[0].tags["dagster/asset_partition_range_start"] == "2026-11-24-23:55"
        assert runs[0].tags["dagster/asset_partition_range_end"] == "2026-11-25-00:00"
