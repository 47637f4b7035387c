"""Metric correctness on real Delta tables: a hand-built scenario, its expected rows written out.

Covers FX fallback to the latest earlier date, missing rates, an unknown site, VIP counting,
duplicates, half-even rounding of exact sums, and windows either side of midnight; on each batch
runner (the in-process FnApiRunner, and the DaskRunner on a real 2-worker LocalCluster).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow.dataset as ds

from betlake.core.config import Settings
from betlake.core.contract import SITE_WINDOW_STATS, TELEMETRY_RAW
from betlake.core.ingest import IngestReport, ingest_files
from betlake.core.lake import Lake
from streaming.batch import reprocess

A = datetime(2026, 11, 24, 23, 55, tzinfo=UTC)  # the last window of 11-24
B = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)  # the first window of 11-25
C = datetime(2026, 11, 25, 0, 5, tzinfo=UTC)


def event(n: int, kind: str, at: str | int, player: str, site: str, **extra: object) -> str:
    return json.dumps(
        {"event_id": f"e{n}", "event_type": kind, "event_time": at, "player_id": player,
         "site_id": site, **extra}
    )  # fmt: skip


SCENARIO = [
    # window A, site s-gb (GBP; no GBP rate on 11-24 -> the 11-23 rate 1.20)
    event(1, "session_start", "2026-11-24T23:55:00Z", "p1", "s-gb"),
    event(2, "bet_placed", "2026-11-24T23:56:00Z", "p1", "s-gb", amount=10.10),  # 12.12
    event(
        3, "bet_placed", "2026-11-25T00:57:00+01:00", "p2", "s-gb", amount="5.05", currency="usd"
    ),  # 4.545
    event(
        4, "bet_placed", "2026-11-24T23:57:30Z", "p2", "s-gb", amount=5.05, currency="USD"
    ),  # 4.545: stake 21.21 exactly, 21.20 if rounded per event
    event(5, "bet_settled", "2026-11-24T23:59:59.999999Z", "p1", "s-gb", amount=20),  # 24.00
    event(6, "deposit", 1795564680000, "p2", "s-gb", amount=100, currency="EUR"),  # 23:58:00
    event(7, "page_view", "2026-11-24T23:58:30Z", "p3", "s-gb"),  # a VIP of another site
    # window A, site s-jp (JPY has no rate on or before 11-24; CHF has none at all)
    event(12, "bet_placed", "2026-11-24T23:59:00Z", "p4", "s-jp", amount=1000),
    event(13, "deposit", "2026-11-24T23:59:10Z", "p4", "s-jp", amount=500, currency="CHF"),
    # window A, a site that is not in bet_sites
    event(14, "heartbeat", "2026-11-24T23:56:00Z", "p9", "zz-unknown"),
    event(15, "deposit", "2026-11-24T23:56:10Z", "p9", "zz-unknown", amount=10, currency="EUR"),
    event(16, "deposit", "2026-11-24T23:56:20Z", "p9", "zz-unknown", amount=7),  # no currency
    # window B, site s-gb (11-25 GBP rate 1.10)
    event(8, "bet_placed", "2026-11-25T00:00:00Z", "p1", "s-gb", amount=10),  # 11.00
    event(8, "bet_placed", "2026-11-25T00:00:00Z", "p1", "s-gb", amount=10),  # duplicate
    event(9, "withdrawal", "2026-11-25T00:01:00Z", "p2", "s-gb", amount=50),  # 55.00
    # window B, site s-jp (11-25 JPY rate 0.0060)
    event(11, "bet_placed", "2026-11-25T00:02:00Z", "p4", "s-jp", amount=1000),  # 6.00
    # rejected, never counted
    event(17, "bet_placed", "2026-11-25T00:03:00Z", "p1", "s-gb", amount=-1),
    '{"event_id": "e18", "event_type": "bet_placed"',
]

ZERO = Decimal("0.00")


def expected(start: datetime, end: datetime, site: str, name, brand, country, **figures):
    row = {
        "window_start": start, "window_end": end, "site_id": site, "site_name": name,
        "brand": brand, "country": country, "events": 0, "active_players": 0, "vip_players": 0,
        "sessions": 0, "bets": 0, "stake_eur": ZERO, "payout_eur": ZERO, "ggr_eur": ZERO,
        "deposits_eur": ZERO, "withdrawals_eur": ZERO, "unpriced_events": 0, "pane": "BATCH",
        "window_date": start.date(),
    }  # fmt: skip
    return row | figures


EXPECTED = [
    expected(A, B, "s-gb", "GB Site", "Brand One", "GB", events=7, active_players=3,
             vip_players=2, sessions=1, bets=3, stake_eur=Decimal("21.21"),
             payout_eur=Decimal("24.00"), ggr_eur=Decimal("-2.79"),
             deposits_eur=Decimal("100.00")),
    expected(A, B, "s-jp", "JP Site", "Brand Two", "JP", events=2, active_players=1, bets=1,
             unpriced_events=2),
    expected(A, B, "zz-unknown", None, None, None, events=3, active_players=1,
             deposits_eur=Decimal("10.00"), unpriced_events=1),
    expected(B, C, "s-gb", "GB Site", "Brand One", "GB", events=2, active_players=2,
             vip_players=1, bets=1, stake_eur=Decimal("11.00"), ggr_eur=Decimal("11.00"),
             withdrawals_eur=Decimal("55.00")),
    expected(B, C, "s-jp", "JP Site", "Brand Two", "JP", events=1, active_players=1, bets=1,
             stake_eur=Decimal("6.00"), ggr_eur=Decimal("6.00")),
]  # fmt: skip


def scenario_file(folder: Path) -> Path:
    """The scenario as a JSON lines file in ``folder``."""
    path = folder / "scenario.jsonl"
    path.write_text("\n".join(SCENARIO) + "\n")
    return path


def ingest_scenario(settings: Settings, folder: Path) -> IngestReport:
    """Ingest the scenario from a file, as ``betlake ingest`` does."""
    return ingest_files(settings, [scenario_file(folder)], show_progress=False)


def gold_rows(lake: Lake) -> list[dict]:
    rows = lake.scan(SITE_WINDOW_STATS).to_pylist()
    for row in rows:
        row.pop("computed_at")
    return sorted(rows, key=lambda r: (r["window_start"], r["site_id"]))


def test_scenario_figures_match_hand_computed_rows(
    batch_settings: Settings, loaded_lake: Lake, tmp_path: Path
) -> None:
    report = ingest_scenario(batch_settings, tmp_path)
    assert (report.stored, report.duplicates, report.rejected) == (15, 1, 2)

    result = reprocess(batch_settings, datetime(2026, 11, 24, 23, 0, tzinfo=UTC), C)
    assert (result.events, result.gold_rows) == (15, 5)
    assert gold_rows(loaded_lake) == EXPECTED
    assert EXPECTED[0]["window_date"] == date(2026, 11, 24)
    assert EXPECTED[3]["window_date"] == date(2026, 11, 25)


def test_reprocessing_unchanged_input_gives_identical_figures(
    batch_settings: Settings, loaded_lake: Lake, tmp_path: Path
) -> None:
    ingest_scenario(batch_settings, tmp_path)

    reprocess(batch_settings, A, C)
    first = gold_rows(loaded_lake)
    reprocess(batch_settings, A, C)
    assert gold_rows(loaded_lake) == first == EXPECTED


def test_a_range_with_no_events_empties_its_windows(
    batch_settings: Settings, loaded_lake: Lake, tmp_path: Path
) -> None:
    ingest_scenario(batch_settings, tmp_path)
    reprocess(batch_settings, A, C)
    Lake(batch_settings.lake).delete_matching(
        TELEMETRY_RAW,
        Lake(batch_settings.lake).scan(TELEMETRY_RAW, where=ds.field("window_start") == B),
    )

    result = reprocess(batch_settings, B, C)
    assert (result.events, result.gold_rows) == (0, 0)
    assert gold_rows(loaded_lake) == EXPECTED[:3]  # window B is gone, A untouched
