"""The corrections loop: the late-data sensor, the nightly backfill, the reference reloads."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from betlake.core.config import Settings
from betlake.core.contract import SITE_WINDOW_STATS
from betlake.core.corrections import Arrivals, coalesce, windows_to_recompute
from betlake.core.windowing import Windowing, epoch_us, from_epoch_us
from betlake.defs.gold import window_partitions
from betlake.defs.reference import reference_assets
from betlake.defs.resources import BetlakeResource

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
IN_FLIGHT = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]

GOLD = dg.AssetKey(SITE_WINDOW_STATS.name)
reprocess_job = dg.define_asset_job(  # partitioned as the gold asset it selects
    "reprocess_site_window_stats",
    selection=[GOLD],
    description="Recompute a range of windows of site_window_stats in one run.",
)
reload_reference_job = dg.define_asset_job(
    "reload_reference", selection=reference_assets, description="Reload the reference data."
)


def range_tags(
    partitions: dg.TimeWindowPartitionsDefinition, first: datetime, last: datetime
) -> dict[str, str]:
    """Tags of one run over the partitions of windows first..last (inclusive)."""
    key = partitions.get_partition_key_for_timestamp
    return {RANGE_START: key(first.timestamp()), RANGE_END: key(last.timestamp())}


def windows_in_flight(
    instance: dg.DagsterInstance, partitions: dg.TimeWindowPartitionsDefinition
) -> set[int]:
    """Windows (epoch us) that a queued or running run of site_window_stats is recomputing."""
    busy: set[int] = set()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT)):
        first = run.tags.get(RANGE_START) or run.tags.get("dagster/partition")
        last = run.tags.get(RANGE_END) or first
        if first and last and run.asset_selection and GOLD in run.asset_selection:
            keys = partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))
            busy.update(
                epoch_us(partitions.time_window_for_partition_key(key).start) for key in keys
            )
    return busy


@dg.sensor(
    job=reprocess_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Reprocesses windows that received too-late or file-ingested events after their"
    " last reprocessing: adjacent windows in one run, never two runs on one window at once.",
)
def late_data_sensor(context: dg.SensorEvaluationContext, betlake: BetlakeResource):
    settings = betlake.settings()
    partitions, windowing = window_partitions(settings), Windowing.of(settings)
    busy = windows_in_flight(context.instance, partitions)
    due, arrivals = windows_to_recompute(
        betlake.lake(), settings, Arrivals.parse(context.cursor), busy
    )
    for start, end in coalesce(due, windowing.window_us):
        tags = range_tags(partitions, from_epoch_us(start), from_epoch_us(end) - windowing.width)
        yield dg.RunRequest(
            run_key=f"late-{tags[RANGE_START]}...{tags[RANGE_END]}@{arrivals.seen_until_us}",
            tags=tags,
        )
    context.update_cursor(arrivals.dump())


def schedules(settings: Settings) -> list[dg.ScheduleDefinition]:
    """The nightly backfill and the reference reload, on the crons of ``settings``."""
    window = Windowing.of(settings).width

    @dg.schedule(
        job=reprocess_job,
        cron_schedule=settings.backfill_cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every night, yesterday's windows recomputed in one run.",
    )
    def nightly_backfill(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        today = context.scheduled_execution_time.astimezone(UTC).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        first, last = today - timedelta(days=1), today - window
        return dg.RunRequest(
            run_key=f"nightly-{first:%Y-%m-%d}",
            tags=range_tags(window_partitions(settings), first, last),
        )

    reference_reload = dg.ScheduleDefinition(
        job=reload_reference_job,
        cron_schedule=settings.reference_cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Reload the reference data every morning.",
    )
    return [nightly_backfill, reference_reload]
