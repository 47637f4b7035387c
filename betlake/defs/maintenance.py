"""Lake upkeep: compact small files and vacuum unreferenced ones, as a job anyone can run and
every night on a schedule (the stream compacts what it appends as it goes; the files that
compaction replaces stay for time travel until this vacuums them)."""

import dagster as dg

from betlake.core.config import Settings
from betlake.core.contract import TABLES
from betlake.defs.resources import BetlakeResource


class MaintainConfig(dg.Config):
    retention_hours: int = 168  # keep a week of time travel


@dg.op
def compact_and_vacuum(
    context: dg.OpExecutionContext, config: MaintainConfig, betlake: BetlakeResource
) -> None:
    lake = betlake.lake()
    for name in TABLES:
        outcome = lake.maintain(name, config.retention_hours)
        context.log.info("%s: %s", name, outcome)


@dg.job(description="Compact every lake table, then vacuum files older than the retention.")
def maintain_lake() -> None:
    compact_and_vacuum()


def maintain_schedule(settings: Settings) -> dg.ScheduleDefinition:
    """:data:`maintain_lake` on the cron of ``settings``."""
    return dg.ScheduleDefinition(
        job=maintain_lake,
        cron_schedule=settings.maintain_cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every night, compact every lake table and vacuum what compaction replaced.",
    )
