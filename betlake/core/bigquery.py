"""The BigQuery mirror of gold: replace a window range of a BigQuery table by the lake's rows.

A range is replaced in one statement, so a reader (or a failed load) never sees it half
replaced: the rows go as Parquet to a staging table of their own (a unique name per call),
then one ``MERGE`` deletes every target row of the range and inserts the staged rows, then the
staging table is dropped. Running it again with the same rows gives the same table.

Works against Google BigQuery and against the local emulator (``betlake local start bigquery``,
which runs multi-statement transactions without their query parameters, hence the MERGE).
Queries go through ``client.query(...).result()``: the emulator's ``query_and_wait`` returns
no rows, rather than an error, for a statement it cannot run.
"""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
from google.cloud import bigquery

from betlake.core.contract import SITE_WINDOW_STATS, TableSpec
from betlake.core.lake import Lake, check_in_range
from betlake.core.windowing import to_utc

STAGING_HOURS = 6  # a staging table left behind by a killed run expires (on Google) after this


def bigquery_type(dtype: pa.DataType) -> str:
    """The BigQuery type of a contract column type."""
    if pa.types.is_timestamp(dtype):
        return "TIMESTAMP"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "STRING"
    if pa.types.is_integer(dtype):
        return "INT64"
    if pa.types.is_decimal(dtype):
        return "NUMERIC" if dtype.precision <= 38 and dtype.scale <= 9 else "BIGNUMERIC"
    if pa.types.is_date32(dtype):
        return "DATE"
    if pa.types.is_boolean(dtype):
        return "BOOL"
    if pa.types.is_floating(dtype):
        return "FLOAT64"
    raise TypeError(f"no BigQuery type for {dtype}")


def bigquery_schema(spec: TableSpec = SITE_WINDOW_STATS) -> list[bigquery.SchemaField]:
    """The BigQuery schema of a lake table (money as NUMERIC(p, s), non-null as REQUIRED)."""
    fields = []
    for field in spec.schema:
        decimal = pa.types.is_decimal(field.type)
        fields.append(
            bigquery.SchemaField(
                field.name,
                bigquery_type(field.type),
                mode="NULLABLE" if field.nullable else "REQUIRED",
                precision=field.type.precision if decimal else None,
                scale=field.type.scale if decimal else None,
            )
        )
    return fields


def lake_range(lake: Lake, start: datetime, end: datetime) -> pa.Table:
    """The gold rows of the lake with window_start in [start, end)."""
    return lake.scan_range(SITE_WINDOW_STATS, start, end)


def _range_parameters(start: datetime, end: datetime) -> list[bigquery.ScalarQueryParameter]:
    start, end = to_utc(start), to_utc(end)
    return [
        bigquery.ScalarQueryParameter("start", "TIMESTAMP", start),
        bigquery.ScalarQueryParameter("end", "TIMESTAMP", end),
        bigquery.ScalarQueryParameter("first_day", "DATE", start.date()),
        bigquery.ScalarQueryParameter("last_day", "DATE", (end - timedelta(microseconds=1)).date()),
    ]


# Both the partition column and window_start, so Google prunes the table's day partitions.
_IN_RANGE = (
    "{t}.window_date >= @first_day AND {t}.window_date <= @last_day "
    "AND {t}.window_start >= @start AND {t}.window_start < @end"
)


def run(client: bigquery.Client, sql: str, params: list | None = None) -> bigquery.QueryJob:
    """Run one statement to completion, raising on failure (never ``query_and_wait``)."""
    job = client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=params or []))
    job.result()
    return job


def ensure_table(
    client: bigquery.Client, dataset: str, table: str, spec: TableSpec = SITE_WINDOW_STATS
) -> bigquery.Table:
    """The dataset and the table (day-partitioned on window_date), created if missing."""
    client.create_dataset(bigquery.Dataset(f"{client.project}.{dataset}"), exists_ok=True)
    target = bigquery.Table(f"{client.project}.{dataset}.{table}", schema=bigquery_schema(spec))
    if "window_date" in spec.schema.names:
        target.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field="window_date"
        )
        target.clustering_fields = ["site_id"]
    return client.create_table(target, exists_ok=True)


def mirror_range(
    client: bigquery.Client,
    dataset: str,
    table: str,
    rows: pa.Table,
    start: datetime,
    end: datetime,
    spec: TableSpec = SITE_WINDOW_STATS,
) -> int:
    """Make the rows of ``dataset.table`` with window_start in [start, end) exactly ``rows``.

    Rows outside the range are untouched; windows of the range that ``rows`` lacks disappear.
    Returns the number of rows now in the range.
    """
    rows = rows.select(spec.schema.names).cast(spec.schema)
    check_in_range(rows, start, end)
    target = ensure_table(client, dataset, table, spec)
    staging = f"{client.project}.{dataset}.{table}__staging_{uuid.uuid4().hex}"
    staged = bigquery.Table(staging, schema=bigquery_schema(spec))
    staged.expires = datetime.now(UTC) + timedelta(hours=STAGING_HOURS)
    client.create_table(staged)
    try:
        _load(client, staging, rows)
        columns = ", ".join(f"`{name}`" for name in spec.schema.names)
        values = ", ".join(f"s.`{name}`" for name in spec.schema.names)
        run(
            client,
            f"""
            MERGE `{target.project}.{target.dataset_id}.{target.table_id}` AS t
            USING `{staging}` AS s
            ON FALSE
            WHEN NOT MATCHED BY SOURCE AND {_IN_RANGE.format(t="t")} THEN DELETE
            WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})
            """,
            _range_parameters(start, end),
        )
    finally:
        client.delete_table(staging, not_found_ok=True)
    return range_rows(client, dataset, table, start, end)


def _load(client: bigquery.Client, staging: str, rows: pa.Table) -> None:
    """Load ``rows`` as one Parquet file into the (new, empty) staging table."""
    buffer = io.BytesIO()
    pq.write_table(rows, buffer)
    buffer.seek(0)
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_APPEND,  # keeps its expiry
    )
    # No ``size``: the client then uploads resumably; the emulator rejects its multipart upload.
    client.load_table_from_file(buffer, staging, job_config=config).result()


def range_rows(
    client: bigquery.Client, dataset: str, table: str, start: datetime, end: datetime
) -> int:
    """How many rows of ``dataset.table`` have window_start in [start, end)."""
    job = run(
        client,
        f"SELECT COUNT(*) AS n FROM `{client.project}.{dataset}.{table}` AS t "
        f"WHERE {_IN_RANGE.format(t='t')}",
        _range_parameters(start, end),
    )
    return int(next(iter(job.result())).n)
