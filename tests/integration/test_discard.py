"""Discard and restore round trip on real Delta tables, with the audit trail and gold figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from betlake.config import BetlakeError, Settings
from betlake.contract import TELEMETRY_DISCARDED, TELEMETRY_RAW
from betlake.discard import discard, restore
from betlake.lake import Lake
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
