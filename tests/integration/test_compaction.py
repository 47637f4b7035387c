"""The stream's compactor: the partitions a writer appended to are rewritten into few files
while appends go on, and no row is lost or doubled (recounted from the written batches)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from betlake.core.contract import TELEMETRY_RAW, TELEMETRY_REJECTED, RawBatch, validate
from betlake.core.lake import Compactor, Lake
from betlake.local.generate import TelemetrySpec, generate_telemetry

pytestmark = pytest.mark.integration


def bronze_batches(settings, batches: int) -> list[pa.Table]:
    """Small bronze batches over two event dates, as a stream appends them."""
    spec = TelemetrySpec(batches * 50, datetime(2026, 11, 30, 23, 0, tzinfo=UTC),
                         timedelta(hours=2), seed=5)  # fmt: skip
    lines = [line.encode() for _, line in generate_telemetry(spec, settings.reference)]
    batch = RawBatch(lines, "kafka", datetime.now(UTC), [f"kafka:t:0:{i}" for i in
                     range(len(lines))], [0] * len(lines), list(range(len(lines))))  # fmt: skip
    validated = validate(batch, window_seconds=300, max_clock_skew_seconds=10**9)
    rows = validated.events
    return [rows.slice(i, 50) for i in range(0, rows.num_rows, 50)], validated.rejected


def files(lake: Lake, name: str) -> int:
    return len(lake.open(name).file_uris())


def test_compaction_rewrites_what_was_appended_and_loses_no_concurrent_append(settings) -> None:
    lake = Lake.of(settings)
    batches, rejected = bronze_batches(settings, 40)
    compactor = Compactor(lake, every_seconds=1, row_group_rows=500)
    for batch in batches[:30]:
        lake.append(TELEMETRY_RAW, batch)
        compactor.wrote(TELEMETRY_RAW, batch)
    assert rejected.num_rows > 2
    for half in (rejected.slice(0, 2), rejected.slice(2)):
        lake.append(TELEMETRY_REJECTED, half)
        compactor.wrote(TELEMETRY_REJECTED, half)
    before = files(lake, TELEMETRY_RAW.name)
    assert compactor.running is None  # not due yet: noted only
    time.sleep(1)
    compactor.wrote(TELEMETRY_RAW, batches[29])  # due now: starts a pass
    appending = threading.Thread(
        target=lambda: [lake.append(TELEMETRY_RAW, batch) for batch in batches[30:]]
    )
    appending.start()  # appends go on while the pass runs
    compactor.running.join(60)
    appending.join(60)
    dates = {str(d) for d in pa.concat_tables(batches[:30]).column("event_date").to_pylist()}
    assert len(dates) == 2 and before >= 30
    assert files(lake, TELEMETRY_RAW.name) <= len(dates) + len(batches[30:])
    row_groups = [
        pq.read_metadata(uri).to_dict()["row_groups"]
        for uri in lake.open(TELEMETRY_RAW.name).file_uris()
    ]  # small row groups: delta-rs holds one in memory until it is written
    assert max(group["num_rows"] for groups in row_groups for group in groups) <= 500
    assert max(map(len, row_groups)) >= 2
    codecs = {column["compression"] for groups in row_groups for group in groups
              for column in group["columns"]}  # fmt: skip
    assert codecs == {"SNAPPY"}  # as an append's: compacted bronze was stored uncompressed
    stored = lake.connect().execute(
        "SELECT count(*), count(DISTINCT event_id) FROM telemetry_raw").fetchone()  # fmt: skip
    expected = pa.concat_tables(batches)
    assert stored == (expected.num_rows, len(set(expected.column("event_id").to_pylist())))
    assert files(lake, TELEMETRY_REJECTED.name) == 1
    assert lake.connect().execute("SELECT count(*) FROM telemetry_rejected").fetchone() == (
        rejected.num_rows,
    )
