"""Gold: ``site_window_stats`` as a 5-minute partitioned asset, recomputed by the one pipeline.

A run over any partition range (one partition, a day, a backfill) reads that range of
``telemetry_raw``, runs :class:`streaming.windows.SiteWindowStats` in batch mode on the
configured runner (``BETLAKE_RUNNER``: the local one, or dask), and replaces exactly that window
range in gold in one commit.
"""

import warnings
from datetime import timedelta

import dagster as dg

from betlake.core.config import Settings
from betlake.core.contract import (
    PARTITION_FORMAT,
    SITE_WINDOW_STATS,
    TELEMETRY_RAW,
    TELEMETRY_REJECTED,
)
from betlake.defs.resources import BetlakeResource
from streaming.batch import reprocess


def window_partitions(settings: Settings) -> dg.TimeWindowPartitionsDefinition:
    """One partition per window, keyed ``%Y-%m-%d-%H:%M`` (UTC)."""
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=f"*/{settings.window_seconds // 60} * * * *",
        start=settings.partitions_start,
        fmt=PARTITION_FORMAT,
        timezone="UTC",
    )


warnings.filterwarnings("ignore", "Parameter `backfill_policy`", dg.BetaWarning)  # used as meant

telemetry_raw = dg.AssetSpec(
    TELEMETRY_RAW.name,
    group_name="bronze",
    kinds={"delta", "kafka"},
    description="Every valid telemetry event once (stream and file ingest write it).",
)


def site_window_stats_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The gold asset, one partition per window (see :func:`window_partitions`)."""

    @dg.asset(
        name=SITE_WINDOW_STATS.name,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[telemetry_raw, "bet_sites", "players", "fx_rates"],
        group_name="gold",
        kinds={"beam", "delta"},
    )
    def site_window_stats(
        context: dg.AssetExecutionContext, betlake: BetlakeResource
    ) -> dg.MaterializeResult:
        """Per-bet-site figures per window, recomputed from telemetry_raw (pane BATCH)."""
        settings = betlake.settings()
        window = context.partition_time_window
        windows = int((window.end - window.start) / timedelta(seconds=settings.window_seconds))
        context.log.info("recomputing %d windows [%s, %s)", windows, window.start, window.end)
        report = reprocess(settings, window.start, window.end)
        summary = (
            betlake.lake()
            .connect()
            .execute(
                f"""
                SELECT count(*), coalesce(sum(events), 0), coalesce(sum(active_players), 0),
                       coalesce(sum(ggr_eur), 0)::DOUBLE, coalesce(sum(unpriced_events), 0),
                       (SELECT count(*) FROM {TELEMETRY_REJECTED.name})
                FROM site_window_stats WHERE window_start >= $1 AND window_start < $2
                """,
                [window.start, window.end],
            )
            .fetchone()
        )
        rows, events, players, ggr, unpriced, rejected = summary
        context.log.info(
            "%d windows, %d rows from %d events in %.1fs", windows, rows, events, report.seconds
        )
        return dg.MaterializeResult(
            metadata={
                "windows": windows,
                "rows": rows,
                "events": events,
                "active_players": players,
                "ggr_eur": ggr,
                "unpriced_events": unpriced,
                "rejected_in_lake": rejected,
                "seconds": round(report.seconds, 2),
            }
        )

    return site_window_stats
