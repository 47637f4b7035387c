"""The BigQuery mirror of gold: ``site_window_stats_bigquery``, one partition per window.

A run over a partition range reads that range of ``site_window_stats`` from the lake and
replaces exactly that range of the BigQuery table (see :func:`betlake.core.bigquery.mirror_range`).
It talks to Google BigQuery with the usual credentials, or to the local emulator
(``betlake local start bigquery``) when ``BETLAKE_BIGQUERY_ENDPOINT`` names it.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import dagster as dg
from dagster_gcp import BigQueryResource
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud.bigquery import Client
from pydantic import Field

from betlake.core.bigquery import lake_range, mirror_range
from betlake.core.config import Settings
from betlake.core.contract import SITE_WINDOW_STATS
from betlake.defs.resources import BetlakeResource

EMULATOR_PROJECT = "betlake-local"  # the project id used against an endpoint with no default


class BetlakeBigQueryResource(BigQueryResource):
    """dagster-gcp's BigQuery resource, plus an API endpoint (the local emulator) and a dataset.

    With ``endpoint`` set the client goes there with anonymous credentials; without it, this is
    the parent resource: Google BigQuery with the environment's credentials.
    """

    endpoint: str | None = Field(
        default=None,
        description="BigQuery API root, e.g. http://127.0.0.1:9050 (the emulator); unset: Google",
    )
    dataset: str = Field(default="betlake", description="The dataset holding the mirror")

    @contextmanager
    def get_client(self) -> Iterator[Client]:
        if not self.endpoint:
            with super().get_client() as client:
                yield client
            return
        client = Client(
            project=self.project or EMULATOR_PROJECT,
            location=self.location,
            client_options=ClientOptions(api_endpoint=self.endpoint),
            credentials=AnonymousCredentials(),
        )
        try:
            yield client
        finally:
            client.close()


def bigquery_resource(settings: Settings) -> BetlakeBigQueryResource:
    """The resource for the settings' ``BETLAKE_BIGQUERY_PROJECT``, ``_DATASET``, ``_ENDPOINT``.

    The project defaults to ``betlake-local`` against an endpoint and to the credentials'
    project against Google.
    """
    endpoint = settings.bigquery_endpoint
    return BetlakeBigQueryResource(
        project=settings.bigquery_project or (EMULATOR_PROJECT if endpoint else None),
        dataset=settings.bigquery_dataset,
        endpoint=endpoint,
    )


def site_window_stats_bigquery_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The mirror asset, partitioned as gold (see :func:`betlake.defs.gold.window_partitions`)."""

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[SITE_WINDOW_STATS.name],
        group_name="gold",
        kinds={"bigquery"},
    )
    def site_window_stats_bigquery(
        context: dg.AssetExecutionContext,
        betlake: BetlakeResource,
        bigquery: BetlakeBigQueryResource,
    ) -> dg.MaterializeResult:
        """site_window_stats mirrored in BigQuery: each run replaces exactly its window range."""
        settings = betlake.settings()
        window = context.partition_time_window
        windows = int((window.end - window.start) / timedelta(seconds=settings.window_seconds))
        rows = lake_range(betlake.lake(), window.start, window.end)
        with bigquery.get_client() as client:
            table = f"{client.project}.{bigquery.dataset}.{SITE_WINDOW_STATS.name}"
            context.log.info(
                "mirroring %d rows of %d windows [%s, %s) to %s",
                rows.num_rows, windows, window.start, window.end, table,
            )  # fmt: skip
            in_range = mirror_range(
                client, bigquery.dataset, SITE_WINDOW_STATS.name, rows, window.start, window.end
            )
        if in_range != rows.num_rows:
            raise RuntimeError(f"{table} holds {in_range} rows in range, the lake {rows.num_rows}")
        return dg.MaterializeResult(
            metadata={
                "rows": in_range,
                "windows": windows,
                "table": table,
                "endpoint": bigquery.endpoint or "https://bigquery.googleapis.com",
            }
        )

    return site_window_stats_bigquery
