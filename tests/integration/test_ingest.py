"""File ingest keeps each event once: within a chunk, across chunks, across files and runs, and
against events another writer stored before (bronze recounted with DuckDB)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from betlake.core import ingest
from betlake.core.contract import TELEMETRY_RAW, RawBatch, validate
from betlake.core.ingest import ingest_files
from tests.hostile import encode, event

pytestmark = pytest.mark.integration


def write(path: Path, ids: list[str]) -> Path:
    """A JSON lines file of valid events with these ids, and one malformed line."""
    path.write_bytes(b"".join(encode(event(i)) + b"\n" for i in ids) + b"not json\n")
    return path


def test_each_event_is_stored_once(settings, loaded_lake, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 600)  # duplicates fall in other chunks
    earlier = validate(RawBatch([encode(event("e0"))], "kafka", datetime.now(UTC), ["k"]),
                       window_seconds=300, max_clock_skew_seconds=300).events  # fmt: skip
    loaded_lake.append(TELEMETRY_RAW, earlier)  # the stream stored it before
    first = write(tmp_path / "a.jsonl", ["e1", "e2", "e1", "e3", "e0", "e4", "e2"])
    report = ingest_files(settings, [first], show_progress=False)
    assert (report.lines, report.stored, report.duplicates, report.rejected) == (8, 4, 3, 1)
    again = ingest_files(settings, [first, write(tmp_path / "b.jsonl", ["e5", "e4"])], False)
    assert (again.stored, again.duplicates) == (1, 8)
    con = loaded_lake.connect()
    counts = con.execute("SELECT count(*), count(DISTINCT event_id) FROM telemetry_raw").fetchone()
    assert counts == (6, 6)
