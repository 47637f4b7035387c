"""The Dagster code location ``betlake``: every asset, check, job, schedule, sensor, resource.

Dagster calls :func:`defs` when it loads the location: the settings that shape the definitions
(window width and first partition, schedule crons, BigQuery target) are read from the
environment then, once, never at import. Assets read the rest when they run
(:class:`betlake.defs.resources.BetlakeResource`).
"""

import dagster as dg

from betlake.core.config import Settings
from betlake.defs.bigquery import bigquery_resource, site_window_stats_bigquery_asset
from betlake.defs.corrections import (
    late_data_sensor,
    reload_reference_job,
    reprocess_job,
    schedules,
)
from betlake.defs.gold import (
    bronze_freshness,
    site_window_stats_asset,
    telemetry_raw,
    window_partitions,
)
from betlake.defs.maintenance import maintain_lake, maintain_schedule
from betlake.defs.reference import reference_assets, site_currencies_have_rates
from betlake.defs.resources import BetlakeResource


def build_definitions(settings: Settings) -> dg.Definitions:
    """Every definition of the code location, shaped by ``settings``."""
    partitions = window_partitions(settings)
    freshness_checks, freshness_sensor = bronze_freshness(settings)
    return dg.Definitions(
        assets=[
            *reference_assets,
            telemetry_raw,
            site_window_stats_asset(partitions),
            site_window_stats_bigquery_asset(partitions),
        ],
        asset_checks=[site_currencies_have_rates, *freshness_checks],
        jobs=[maintain_lake, reprocess_job, reload_reference_job],
        schedules=[*schedules(settings), maintain_schedule(settings)],
        sensors=[late_data_sensor, freshness_sensor],
        resources={"betlake": BetlakeResource(), "bigquery": bigquery_resource(settings)},
        # Runs are one step or a few light ones, and the heavy work is the Beam pipeline's: a
        # process per step would only pay Python's and Beam's start-up again.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location, from the environment as it is when Dagster loads it."""
    return build_definitions(Settings.from_env())
