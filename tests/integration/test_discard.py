"""Discard and restore round trip on real Delta tables, with the audit trail and gold figures."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
import pytest

from betlake.core.config import BetlakeError, Settings
from betlake.core.contract import TELEMETRY_DISCARDED, TELEMETRY_RAW
from betlake.core.discard import discard, restore
from betlake.core.ingest import ingest_files
from betlake.core.lake import Lake
from streaming.batch import reprocess
from tests.integration.test_site_window_stats import EXPECTED, A, B, C, gold_rows, ingest_scenario


def test_discard_then_restore_round_trip(settings: Settings, loaded_lake: Lake, tmp_path: Path):
    ingest_scenario(settings, tmp_path)
    reprocess(settings, A, C)
    assert gold_rows(loaded_lake) == EXPECTED

    done = discard(settings, A, C, reason="test bets from QA", site="s-gb")

    assert done.events == 9  # 7 events in 23:55, 2 in 00:00 (the duplicate was stored once)
    assert (done.first_window, done.end_window) == (A, C)
    raw_sites = set(loaded_lake.scan(TELEMETRY_RAW, ["site_id"]).column("site_id").to_pylist())
    assert "s-gb" not in raw_sites
    audit = loaded_lake.scan(TELEMETRY_DISCARDED)
    assert audit.num_rows == 9
    assert set(audit.column("discard_id").to_pylist()) == {done.discard_id}
    assert set(audit.column("discard_reason").to_pylist()) == {"test bets from QA"}
    assert audit.column("restored_at").null_count == 9
    reprocess(settings, done.first_window, done.end_window)
    assert gold_rows(loaded_lake) == [r for r in EXPECTED if r["site_id"] != "s-gb"]

    back = restore(settings, done.discard_id)

    assert back.events == 9
    audit = loaded_lake.scan(TELEMETRY_DISCARDED)
    assert audit.num_rows == 9 and audit.column("restored_at").null_count == 0  # kept, stamped
    reprocess(settings, back.first_window, back.end_window)
    assert gold_rows(loaded_lake) == EXPECTED
    with pytest.raises(BetlakeError, match="no discard"):
        restore(settings, done.discard_id)  # a restore happens once


def test_discard_that_matches_nothing_says_so(settings: Settings, loaded_lake: Lake):
    with pytest.raises(BetlakeError, match="nothing discarded"):
        discard(settings, A, B, reason="x", player="nobody")
    assert loaded_lake.open(TELEMETRY_DISCARDED.name) is None


def test_a_discard_and_a_restore_are_one_commit_per_table(
    settings: Settings, loaded_lake: Lake, tmp_path: Path
):
    """Thousands of events over two days (several partitions, ids that SQL would need quoted)
    leave telemetry_raw in one commit and come back in one: no reader sees a discard half done."""
    lines = tmp_path / "many.jsonl"
    lines.write_text("".join(
        json.dumps({"event_id": f"it's-{n}", "event_type": "page_view", "site_id": "s-gb",
                    "player_id": "p2" if n % 10 == 0 else "p1",
                    "event_time": f"2026-11-2{4 + n % 2}T10:{n % 60:02d}:00Z"}) + "\n"
        for n in range(5000)
    ))  # fmt: skip
    ingest_files(settings, [lines], show_progress=False)
    days = datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 11, 26, tzinfo=UTC)
    other = discard(settings, *days, reason="another discard, left alone", player="p2")
    raw, audit = loaded_lake.open(TELEMETRY_RAW.name), loaded_lake.open(TELEMETRY_DISCARDED.name)
    versions = raw.version(), audit.version()

    done = discard(settings, *days, reason="bulk", player="p1")

    assert (other.events, done.events) == (500, 4500)
    raw.update_incremental()
    audit.update_incremental()
    assert (raw.version(), audit.version()) == (versions[0] + 1, versions[1] + 1)
    assert loaded_lake.scan(TELEMETRY_RAW).num_rows == 0

    restore(settings, done.discard_id)

    raw.update_incremental()
    audit.update_incremental()
    assert (raw.version(), audit.version()) == (versions[0] + 2, versions[1] + 2)
    assert loaded_lake.scan(TELEMETRY_RAW).num_rows == 4500
    waiting = loaded_lake.scan(TELEMETRY_DISCARDED, ["discard_id", "restored_at"])
    waiting = waiting.filter(pc.is_null(waiting["restored_at"])).column("discard_id")
    assert waiting.to_pylist() == [other.discard_id] * 500  # only this discard was stamped
