"""A rejected message is recorded once, however often it is re-read: the key lookup reads only
the files whose positions overlap the batch's, and still finds every stored origin (rows
recounted from the Delta table with DuckDB)."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from betlake.core.contract import TELEMETRY_RAW, TELEMETRY_REJECTED
from betlake.core.lake import Lake
from streaming.kafka_source import FIGURE_COLUMNS, PartitionRead, ReadPartitionsFn

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


def stored_read(partition: int, first: int, next_: int, bad: list[int]) -> PartitionRead:
    """A read of offsets [first, next_) of which ``bad`` were rejected."""
    return PartitionRead(
        partition=partition, first_offset=first, next_offset=next_,
        to_store=TELEMETRY_RAW.schema.empty_table(),
        figures=TELEMETRY_RAW.schema.empty_table().select(FIGURE_COLUMNS),
        rejected=rejected(partition, bad), events=0, too_late=0,
        watermark_us=None,
    )  # fmt: skip


def test_the_reader_stores_each_rejected_offset_once_across_restarts_and_retries(
    settings,
) -> None:
    """Reads past the offset the table records for the partition are appended without a
    lookup (the soak's finding: a lookup per read cost more the longer the stream ran);
    re-reads, by this reader or another one, never add a row twice."""
    first = ReadPartitionsFn(settings, [0, 1])
    first.setup()
    first._store(stored_read(0, 0, 100, [10, 50]))
    first._store(stored_read(0, 100, 200, [150]))
    first._store(stored_read(1, 0, 100, [50]))
    restarted = ReadPartitionsFn(settings, [0, 1])  # a new run, from an older commit
    restarted.setup()
    restarted._store(stored_read(0, 50, 200, [50, 150]))
    restarted._store(stored_read(0, 200, 300, [250]))
    restarted._store(stored_read(0, 200, 300, [250]))  # a bundle retried
    restarted._store(stored_read(1, 100, 200, [120]))
    first._store(stored_read(0, 250, 350, [250, 300]))  # the partition moved back to a reader
    rows = (
        Lake.of(settings).connect()
        .execute("SELECT kafka_partition, kafka_offset FROM telemetry_rejected ORDER BY ALL")
        .fetchall()
    )  # fmt: skip
    assert rows == [(0, 10), (0, 50), (0, 150), (0, 250), (0, 300), (1, 50), (1, 120)]
