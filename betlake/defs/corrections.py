"""The corrections loop: the late-data sensor, the nightly backfill, the reference reloads."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from betlake.core.config import Settings
from betlake.core.contract import PARTITION_FORMAT, SITE_WINDOW_STATS
from betlake.core.corrections import Arrivals, coalesce, windows_to_recompute
from betlake.core.windowing import Windowing, epoch_us
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


def key_of(window_us: int) -> str:
    return datetime.fromtimestamp(window_us / 1e6, UTC).strftime(PARTITION_FORMAT)


def window_of(key: str) -> int:
    return epoch_us(datetime.strptime(key, PARTITION_FORMAT).replace(tzinfo=UTC))


def range_tags(first_window_us: int, last_window_us: int) -> dict[str, str]:
    """Tags of one run over the partitions of windows first..last (inclusive)."""
    return {RANGE_START: key_of(first_window_us), RANGE_END: key_of(last_window_us)}


def windows_in_flight(instance: dg.DagsterInstance, width_us: int) -> set[int]:
    """Windows that a queued or running run of site_window_stats is recomputing."""
    busy: set[int] = set()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT)):
        first = run.tags.get(RANGE_START) or run.tags.get("dagster/partition")
        last = run.tags.get(RANGE_END) or first
        if first and last and run.asset_selection and GOLD in run.asset_selection:
            busy.update(range(window_of(first), window_of(last) + width_us, width_us))
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
    width_us = settings.window_seconds * 1_000_000
    busy = windows_in_flight(context.instance, width_us)
    due, arrivals = windows_to_recompute(
        betlake.core.lake(), settings, Arrivals.parse(context.cursor), busy
    )
    for start, end in coalesce(due, width_us):
        tags = range_tags(start, end - width_us)
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
            tags=range_tags(epoch_us(first), epoch_us(last)),
        )

    reference_reload = dg.ScheduleDefinition(
        job=reload_reference_job,
        cron_schedule=settings.reference_cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Reload the reference data every morning.",
    )
    return [nightly_backfill, reference_reload]
