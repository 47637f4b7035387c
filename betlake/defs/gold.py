"""Gold: ``site_window_stats`` as a 5-minute partitioned asset, recomputed by the one pipeline.

A run over any partition range (one partition, a day, a backfill) reads that range of
``telemetry_raw``, runs :class:`streaming.windows.SiteWindowStats` in batch mode on the
configured runner (``BETLAKE_RUNNER``: the local one, or dask), and replaces exactly that window
range in gold in one commit.
"""

import warnings
from datetime import datetime, timedelta

import dagster as dg
import duckdb
import pyarrow as pa

from betlake.core.config import Settings
from betlake.core.contract import (
    PARTITION_FORMAT,
    SITE_WINDOW_STATS,
    TELEMETRY_RAW,
    TELEMETRY_REJECTED,
)
from betlake.core.lake import Lake
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
# The last-update freshness check (and its sensor) reads the stream's observations of
# telemetry_raw, an asset no run materializes: used as meant.
warnings.filterwarnings("ignore", "Function `build_.*freshness_checks", dg.SupersessionWarning)

telemetry_raw = dg.AssetSpec(
    TELEMETRY_RAW.name,
    group_name="bronze",
    kinds={"delta", "kafka"},
    description="Every valid telemetry event once (stream and file ingest write it); the stream"
    " observes it (rows, last event time, last arrival).",
)


def bronze_freshness(
    settings: Settings,
) -> tuple[list[dg.AssetChecksDefinition], dg.SensorDefinition]:
    """A check that warns when no event has reached telemetry_raw for
    ``bronze_freshness_seconds`` (as the stream observes it), and the sensor that runs it."""
    checks = list(
        dg.build_last_update_freshness_checks(
            assets=[telemetry_raw.key],
            lower_bound_delta=timedelta(seconds=settings.bronze_freshness_seconds),
            severity=dg.AssetCheckSeverity.WARN,
        )
    )
    sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=checks,
        name="bronze_freshness_sensor",
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    return checks, sensor


PANE_TAG = "betlake/pane"  # the stream's materializations carry it too (ON_TIME or LATE)
_FIGURES = [c for c in SITE_WINDOW_STATS.schema.names if c not in ("pane", "computed_at")]


def figures_in_range(lake: Lake, start: datetime, end: datetime) -> pa.Table:
    """Gold's figures (no pane, no computed_at) of the windows in [start, end)."""
    return lake.scan_range(SITE_WINDOW_STATS, start, end, _FIGURES)


def rows_changed(before: pa.Table, after: pa.Table) -> int:
    """Rows a reprocessing changed: new or different figures, and rows that vanished."""
    con = duckdb.connect()
    con.register("before", before)
    con.register("after", after)
    return con.execute(
        """SELECT (SELECT count(*) FROM (FROM after EXCEPT FROM before))
                + (SELECT count(*) FROM (SELECT window_start, site_id FROM before
                                         EXCEPT SELECT window_start, site_id FROM after))"""
    ).fetchone()[0]


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
        lake = betlake.lake()
        before = figures_in_range(lake, window.start, window.end)
        report = reprocess(settings, window.start, window.end)
        changed = rows_changed(before, figures_in_range(lake, window.start, window.end))
        summary = (
            lake.connect()
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
            tags={PANE_TAG: "BATCH"},
            metadata={
                "pane": "BATCH",
                "windows": windows,
                "rows": rows,
                "rows_changed": changed,
                "events": events,
                "active_players": players,
                "ggr_eur": ggr,
                "unpriced_events": unpriced,
                "rejected_in_lake": rejected,
                "seconds": round(report.seconds, 2),
            },
        )

    return site_window_stats
