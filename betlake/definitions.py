"""The Dagster code location ``betlake``: every asset, check, job and resource."""

import dagster as dg

from betlake.defs.bigquery import bigquery_resource, site_window_stats_bigquery
from betlake.defs.corrections import (
    late_data_sensor,
    nightly_backfill,
    reference_reload,
    reload_reference_job,
    reprocess_job,
)
from betlake.defs.gold import site_window_stats, telemetry_raw
from betlake.defs.maintenance import maintain_lake
from betlake.defs.reference import reference_assets, site_currencies_have_rates
from betlake.defs.resources import BetlakeResource

defs = dg.Definitions(
    assets=[*reference_assets, telemetry_raw, site_window_stats, site_window_stats_bigquery],
    asset_checks=[site_currencies_have_rates],
    jobs=[maintain_lake, reprocess_job, reload_reference_job],
    schedules=[nightly_backfill, reference_reload],
    sensors=[late_data_sensor],
    resources={"betlake": BetlakeResource(), "bigquery": bigquery_resource()},
)
