"""A rejected message is recorded once, however often it is re-read: the key lookup reads only
the files whose positions overlap the batch's, and still finds every stored origin (rows
recounted from the Delta table with DuckDB)."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from betlake.core.contract import TELEMETRY_REJECTED
from betlake.core.lake import Lake

pytestmark = pytest.mark.integration


def rejected(partition: int | None, offsets: list[int], source: str = "kafka") -> pa.Table:
    """Rejected rows of one partition's offsets (no partition: a file's lines)."""
    n = len(offsets)
    return pa.table(
        {
            "ingest_time": [datetime.now(UTC)] * n,
            "source": [source] * n,
            "kafka_partition": [partition] * n,
            "kafka_offset": [None if partition is None else o for o in offsets],
            "reason": ["malformed_json"] * n,
            "payload": ["{"] * n,
            "origin": [f"{source}:t:{partition}:{o}" for o in offsets],
        },
        schema=TELEMETRY_REJECTED.schema,
    )


def test_each_rejected_origin_is_stored_once(settings) -> None:
    lake = Lake.of(settings)
    assert lake.insert_new(TELEMETRY_REJECTED, rejected(0, [10, 11, 12])) == 3
    assert lake.insert_new(TELEMETRY_REJECTED, rejected(1, [10, 11])) == 2  # another partition
    assert lake.insert_new(TELEMETRY_REJECTED, rejected(0, [10, 11, 12])) == 0  # a re-read
    assert lake.insert_new(TELEMETRY_REJECTED, rejected(0, [12, 13, 13])) == 1  # overlapping
    assert lake.insert_new(TELEMETRY_REJECTED, rejected(None, [1, 2], "file")) == 2
    assert lake.insert_new(TELEMETRY_REJECTED, rejected(None, [2, 3], "file")) == 1
    mixed = pa.concat_tables([rejected(0, [13, 14]), rejected(None, [3, 4], "file")])
    assert lake.insert_new(TELEMETRY_REJECTED, mixed) == 2  # nulls: no narrowing, still exact
    rows, distinct = (
        lake.connect()
        .execute("SELECT count(*), count(DISTINCT origin) FROM telemetry_rejected")
        .fetchone()
    )
    assert rows == distinct == 11  # partition 0: 10-14, partition 1: 10-11, file: 1-4
