"""The corrections loop on a real Dagster instance and real Delta tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from betlake.core.config import Settings
from betlake.core.ingest import ingest_files
from betlake.core.lake import Lake
from betlake.defs.corrections import late_data_sensor, reprocess_job, schedules
from betlake.defs.gold import site_window_stats_asset, window_partitions
from betlake.defs.resources import BetlakeResource
from streaming.batch import reprocess
from tests.integration.test_site_window_stats import gold_rows, ingest_scenario

DAY = datetime(2026, 11, 24, tzinfo=UTC)
PARTITIONS = window_partitions(Settings())
site_window_stats = site_window_stats_asset(PARTITIONS)
RANGE = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def late_file(path: Path, windows: list[str]) -> Path:
    """Events for the given windows (HH:MM on DAY), arriving now from a file."""
    lines = [
        json.dumps({"event_id": f"late-{at}-{n}", "event_type": "bet_placed",
                    "event_time": f"2026-11-24T{at}:{10 + n}Z", "player_id": "p1",
                    "site_id": "s-gb", "amount": 5})
        for at in windows for n in range(2)
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def tick(instance: dg.DagsterInstance, cursor: str | None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"betlake": BetlakeResource()}
    )
    return list(late_data_sensor(context)), context.cursor


def test_sensor_requests_one_run_per_range_of_late_windows(
    env: Settings, batch_settings: Settings, loaded_lake: Lake, instance, tmp_path: Path
) -> None:
    ingest_scenario(env, tmp_path)
    reprocess(batch_settings, DAY, DAY + timedelta(days=1, minutes=10))
    requests, cursor = tick(instance, None)
    assert requests == []  # everything ingested so far is in the reprocessed figures

    late = late_file(tmp_path / "late.jsonl", ["10:00", "14:30", "20:00", "20:05"])
    ingest_files(env, [late], show_progress=False)
    requests, cursor = tick(instance, cursor)

    assert sorted((r.tags[RANGE[0]], r.tags[RANGE[1]]) for r in requests) == [
        ("2026-11-24-10:00", "2026-11-24-10:00"),
        ("2026-11-24-14:30", "2026-11-24-14:30"),
        ("2026-11-24-20:00", "2026-11-24-20:05"),
    ]
    assert tick(instance, cursor)[0] == []  # the same arrivals are never requested twice

    for request in requests:
        result = dg.materialize(
            [site_window_stats], instance=instance, tags=request.tags,
            resources={"betlake": BetlakeResource()},
        )  # fmt: skip
        assert result.success
    after_runs = [{k: v for k, v in r.items() if k != "pane"} for r in gold_rows(loaded_lake)]
    reprocess(batch_settings, DAY, DAY + timedelta(days=1, minutes=10))  # all, from scratch
    assert after_runs == [
        {k: v for k, v in r.items() if k != "pane"} for r in gold_rows(loaded_lake)
    ]
    late_windows = {r["window_start"].strftime("%H:%M") for r in gold_rows(loaded_lake)}
    assert {"10:00", "14:30", "20:00", "20:05"} <= late_windows


def test_sensor_leaves_windows_of_a_running_reprocess_for_later(
    env: Settings, loaded_lake: Lake, instance, tmp_path: Path
) -> None:
    ingest_files(env, [late_file(tmp_path / "late.jsonl", ["10:00", "10:05"])], False)
    running = instance.create_run_for_job(
        reprocess_job.resolve(asset_graph=dg.Definitions(
            assets=[site_window_stats], resources={"betlake": BetlakeResource()}
        ).resolve_asset_graph()),
        asset_selection=frozenset({site_window_stats.key}),
        tags={RANGE[0]: "2026-11-24-10:05", RANGE[1]: "2026-11-24-10:05"},
        status=dg.DagsterRunStatus.STARTED,
    )  # fmt: skip

    requests, cursor = tick(instance, None)
    assert [(r.tags[RANGE[0]], r.tags[RANGE[1]]) for r in requests] == [
        ("2026-11-24-10:00", "2026-11-24-10:00")
    ]
    instance.report_run_failed(running)
    requests, _ = tick(instance, cursor)
    assert [(r.tags[RANGE[0]], r.tags[RANGE[1]]) for r in requests] == [
        ("2026-11-24-10:05", "2026-11-24-10:05")
    ]


def test_nightly_backfill_covers_exactly_yesterday() -> None:
    nightly_backfill, _ = schedules(Settings())
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 25, 0, 30, tzinfo=UTC)
    )
    request = nightly_backfill(context)
    first, last = request.tags[RANGE[0]], request.tags[RANGE[1]]
    assert (first, last) == ("2026-11-24-00:00", "2026-11-24-23:55")
    keys = PARTITIONS.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))
    assert len(keys) == 288 and all(k.startswith("2026-11-24-") for k in keys)


def test_schedules_run_on_the_configured_crons() -> None:
    assert [s.cron_schedule for s in schedules(Settings())] == ["30 0 * * *", "0 5 * * *"]
    settings = Settings.from_env(
        {"BETLAKE_BACKFILL_CRON": "15 2 * * *", "BETLAKE_REFERENCE_CRON": "0 6 * * 1"}
    )
    assert [s.cron_schedule for s in schedules(settings)] == ["15 2 * * *", "0 6 * * 1"]
