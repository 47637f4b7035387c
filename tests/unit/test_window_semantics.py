"""Event-time semantics of :class:`streaming.windows.SiteWindowStats` in streaming mode, and
its hand-computed scenario in batch mode on each batch runner.

Modelled on Beam's Java ``LeaderBoardTest``: a ``TestStream`` (imported as ``BeamTestStream``
so that pytest does not try to collect it) feeds Arrow batches of validated events and moves
the watermark by hand, on the Python DirectRunner (TestStream keeps it off Prism).
The reference data is in a real temporary Delta lake (the ``loaded_lake`` fixture).
Window 300 s, allowed lateness 900 s, so window A = [00:00, 00:05) on 2026-11-25 (GBP 1.10,
JPY 0.0060) fires ON_TIME when the watermark reaches 00:05 and takes late events while the
watermark is before 00:20.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from itertools import count

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from betlake.core.config import Settings
from betlake.core.contract import SITE_WINDOW_STATS, TELEMETRY_RAW, RawBatch, validate
from betlake.core.lake import Lake
from betlake.core.windowing import Windowing
from streaming.batch import reprocess
from streaming.windows import PreAggregateFn, SiteWindowStats, merge_sites

WINDOW = 300
LATENESS = 900
A = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)  # window A
B = datetime(2026, 11, 25, 0, 5, tzinfo=UTC)  # window B (and the end of A)
C = datetime(2026, 11, 25, 0, 10, tzinfo=UTC)
LATE_WINDOW = datetime(2026, 11, 25, 0, 20, tzinfo=UTC)  # where the watermark is, late on
A_END = Timestamp.from_utc_datetime(B)
A_CLOSES = A_END + Duration(seconds=LATENESS)  # end + allowed lateness: 00:20:00


RULES = Windowing(WINDOW, 30, LATENESS)
# TestStream carries watermarks in milliseconds (it asserts no precision is lost), so the
# boundaries are probed one millisecond either side; test_watermark.py probes microseconds.
MILLISECOND = Duration(micros=1000)
ZERO = Decimal("0.00")

# Rows reach the test through a module-level collector: the BundleBasedDirectRunner runs the
# pipeline in this process, and the DoFn is pickled by reference to this module, so its
# ``_ROWS`` is this one. Each pipeline run collects under its own key.
_ROWS: dict[int, list[dict]] = defaultdict(list)
_RUNS = count()


class _Collect(beam.DoFn):
    def __init__(self, run: int) -> None:
        self.run = run

    def process(self, row: dict) -> None:
        _ROWS[self.run].append(row)


def event(n: int, kind: str, at: str, player: str, site: str, **extra: object) -> str:
    return json.dumps(
        {"event_id": f"e{n}", "event_type": kind, "event_time": at, "player_id": player,
         "site_id": site, **extra}
    )  # fmt: skip


def batch(*events: str) -> TimestampedValue:
    """Validated events as one ``telemetry_raw`` Arrow table, stamped at its latest event."""
    validated = validate(
        RawBatch(
            payloads=list(events),
            source="file",
            arrived_at=datetime(2026, 11, 25, 1, 0, tzinfo=UTC),
            origins=[f"test:{i}" for i in range(len(events))],
        ),
        window_seconds=WINDOW,
        max_clock_skew_seconds=10**9,
    )
    table: pa.Table = validated.events
    assert (table.num_rows, validated.rejected.num_rows) == (len(events), 0)
    latest = pc.cast(pc.max(table.column("event_time")), pa.int64()).as_py()
    return TimestampedValue(table, Timestamp(micros=latest))


def run(settings: Settings, stream: BeamTestStream) -> list[dict]:
    """The rows SiteWindowStats emits for ``stream``, in the order they came out, without
    ``computed_at`` (checked to be an aware datetime)."""
    run_id = next(_RUNS)
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with BeamTestPipeline(options=options) as pipeline:
        _ = (
            pipeline
            | stream
            | SiteWindowStats(Lake.of(settings), RULES, batch=False)
            | beam.ParDo(_Collect(run_id))
        )
    rows = _ROWS.pop(run_id, [])
    for row in rows:
        computed_at = row.pop("computed_at")
        assert isinstance(computed_at, datetime) and computed_at.tzinfo is not None
    return rows


SITES = {
    "s-gb": ("GB Site", "Brand One", "GB"),
    "s-ie": ("IE Site", "Brand One", "IE"),
    "s-jp": ("JP Site", "Brand Two", "JP"),
}


def expected(start: datetime, end: datetime, site: str, pane: str, **figures: object) -> dict:
    name, brand, country = SITES[site]
    row = {
        "window_start": start, "window_end": end, "site_id": site, "site_name": name,
        "brand": brand, "country": country, "events": 0, "active_players": 0, "vip_players": 0,
        "sessions": 0, "bets": 0, "stake_eur": ZERO, "payout_eur": ZERO, "ggr_eur": ZERO,
        "deposits_eur": ZERO, "withdrawals_eur": ZERO, "unpriced_events": 0, "pane": pane,
        "window_date": start.date(),
    }  # fmt: skip
    return row | figures


def rows_of(rows: list[dict], start: datetime, site: str) -> list[dict]:
    return [r for r in rows if (r["window_start"], r["site_id"]) == (start, site)]


def key(row: dict) -> tuple:
    return row["window_start"], row["site_id"], row["pane"], row["events"]


# Window A, site s-gb, on time: GBP at 1.10 on 2026-11-25.
GB_ON_TIME = [
    event(1, "session_start", "2026-11-25T00:00:10Z", "p1", "s-gb"),
    event(2, "bet_placed", "2026-11-25T00:01:00Z", "p1", "s-gb", amount="10.00"),  # 11.00
    event(3, "bet_placed", "2026-11-25T00:02:00Z", "p2", "s-gb", amount="5.05"),  # 5.555
]  # stake 16.555 exactly -> 16.56 (half-even); events 3, players p1 (VIP) and p2
GB_ON_TIME_ROW = expected(A, B, "s-gb", "ON_TIME", events=3, active_players=2, vip_players=1,
                          sessions=1, bets=2, stake_eur=Decimal("16.56"),
                          ggr_eur=Decimal("16.56"))  # fmt: skip
GB_DEPOSIT_EUR = event(
    4, "deposit", "2026-11-25T00:03:00Z", "p2", "s-gb", amount=20, currency="EUR"
)  # 20.00: the event's own currency wins over the site's


# Two batches over windows A and B, and the figures of each (window, site), worked out by hand.
SCENARIO = [
    [*GB_ON_TIME, GB_DEPOSIT_EUR,
     event(5, "bet_settled", "2026-11-25T00:04:00Z", "p1", "s-gb", amount=4)],
    [event(6, "bet_placed", "2026-11-25T00:02:30Z", "p3", "s-ie", amount="7.25"),
     event(7, "page_view", "2026-11-25T00:03:30Z", "p3", "s-ie"),
     event(8, "bet_placed", "2026-11-25T00:04:59.999999Z", "p4", "s-jp", amount=1000),  # 6.00
     event(9, "bet_placed", "2026-11-25T00:05:00Z", "p1", "s-gb", amount=1)],
]  # fmt: skip


def scenario_rows(pane: str) -> list[dict]:
    """The scenario's rows, each window's one pane labelled ``pane``, sorted by :func:`key`."""
    return [
        expected(A, B, "s-gb", pane, events=5, active_players=2, vip_players=1, sessions=1,
                 bets=2, stake_eur=Decimal("16.56"), payout_eur=Decimal("4.40"),
                 ggr_eur=Decimal("12.16"), deposits_eur=Decimal("20.00")),
        expected(A, B, "s-ie", pane, events=2, active_players=1, vip_players=1, bets=1,
                 stake_eur=Decimal("7.25"), ggr_eur=Decimal("7.25")),
        expected(A, B, "s-jp", pane, events=1, active_players=1, bets=1,
                 stake_eur=Decimal("6.00"), ggr_eur=Decimal("6.00")),
        expected(B, C, "s-gb", pane, events=1, active_players=1, vip_players=1, bets=1,
                 stake_eur=Decimal("1.10"), ggr_eur=Decimal("1.10")),
    ]  # fmt: skip


def test_on_time_pane_has_exact_figures_once_per_site(
    settings: Settings, loaded_lake: Lake
) -> None:
    stream = (
        BeamTestStream()
        .advance_watermark_to(Timestamp.from_utc_datetime(A))
        .add_elements([batch(*SCENARIO[0])])
        .add_elements([batch(*SCENARIO[1])])
        .advance_watermark_to(A_END)  # A fires; B (from 00:05:00 on) stays open
        .advance_watermark_to(Timestamp.from_utc_datetime(C))  # B fires
        .advance_watermark_to_infinity()
    )
    rows = run(settings, stream)

    assert sorted(rows, key=key) == scenario_rows("ON_TIME")


def test_a_batch_gives_one_partial_per_window_holding_its_sites(loaded_lake: Lake) -> None:
    """The window stage's state is keyed by window (one Prism round trip per window a read
    touches, not one per site): a batch's partials are one per window, with each site's
    figures, and merging leaves the merged partial as it was."""
    pre_aggregate = PreAggregateFn(RULES, loaded_lake)
    pre_aggregate.setup()
    first, second = (dict(pre_aggregate.process(batch(*events).value)) for events in SCENARIO)
    a, b = (Timestamp.from_utc_datetime(t).micros for t in (A, B))

    assert {start: sorted(sites) for start, sites in first.items()} == {a: ["s-gb"]}
    assert {start: sorted(sites) for start, sites in second.items()} == {
        a: ["s-ie", "s-jp"], b: ["s-gb"]}  # fmt: skip
    merged = merge_sites(merge_sites({}, first[a]), second[a])
    assert {site: figures.events for site, figures in merged.items()} == {
        "s-gb": 5, "s-ie": 2, "s-jp": 1}  # fmt: skip
    merge_sites(merged, second[b])  # s-gb again (the window does not matter here)
    assert merged["s-gb"].events == 6
    assert [first[a]["s-gb"].events, second[b]["s-gb"].events] == [5, 1]


def test_batch_run_gives_the_same_figures(batch_settings: Settings, loaded_lake: Lake) -> None:
    """The scenario stored in bronze and recomputed in batch on each batch runner (the local
    one, and the DaskRunner on a real 2-worker LocalCluster): the same figures, to the cent."""
    for events in SCENARIO:
        loaded_lake.append(TELEMETRY_RAW, batch(*events).value)

    report = reprocess(batch_settings, A, C)

    rows = loaded_lake.scan(SITE_WINDOW_STATS).to_pylist()
    for row in rows:
        row.pop("computed_at")
    assert sorted(rows, key=key) == scenario_rows("BATCH")
    assert (report.events, report.gold_rows) == (9, 4)


def test_late_panes_carry_the_whole_window(settings: Settings, loaded_lake: Lake) -> None:
    stream = (
        BeamTestStream()
        .advance_watermark_to(Timestamp.from_utc_datetime(A))
        .add_elements([batch(*GB_ON_TIME)])
        .add_elements(
            [batch(event(20, "deposit", "2026-11-25T00:01:00Z", "p3", "s-ie", amount="12.34"))]
        )
        .advance_watermark_to(A_END)  # ON_TIME for both sites
        .add_elements(
            [batch(event(21, "bet_placed", "2026-11-25T00:04:00Z", "p1", "s-gb", amount=2))]
        )  # late, 2.20
        # 1 ms before A closes: still late, not yet droppable
        .advance_watermark_to(A_CLOSES - MILLISECOND)
        .add_elements(
            [batch(event(22, "bet_settled", "2026-11-25T00:01:30Z", "p2", "s-gb", amount=30))]
        )  # late, 33.00
        .advance_watermark_to_infinity()
    )
    rows = run(settings, stream)

    assert rows_of(rows, A, "s-gb") == [
        GB_ON_TIME_ROW,
        expected(A, B, "s-gb", "LATE", events=4, active_players=2, vip_players=1, sessions=1,
                 bets=3, stake_eur=Decimal("18.76"), ggr_eur=Decimal("18.76")),  # 18.755
        expected(A, B, "s-gb", "LATE", events=5, active_players=2, vip_players=1, sessions=1,
                 bets=3, stake_eur=Decimal("18.76"), payout_eur=Decimal("33.00"),
                 ggr_eur=Decimal("-14.24")),
    ]  # fmt: skip
    # a late event fires only its own site's pane
    assert rows_of(rows, A, "s-ie") == [
        expected(A, B, "s-ie", "ON_TIME", events=1, active_players=1, vip_players=1,
                 deposits_eur=Decimal("12.34")),
    ]  # fmt: skip
    assert len(rows) == 4


def test_event_after_end_plus_lateness_is_in_no_row(settings: Settings, loaded_lake: Lake) -> None:
    stream = (
        BeamTestStream()
        .advance_watermark_to(Timestamp.from_utc_datetime(A))
        .add_elements([batch(*GB_ON_TIME)])
        .advance_watermark_to(A_END)
        .advance_watermark_to(A_CLOSES + MILLISECOND)  # A is closed
        .add_elements(
            [
                batch(
                    event(30, "bet_placed", "2026-11-25T00:04:00Z", "p1", "s-gb", amount=2),
                    event(31, "bet_placed", "2026-11-25T00:20:00Z", "p1", "s-gb", amount=3),
                )  # one event for closed A, one for the open window 00:20
            ]
        )
        .advance_watermark_to_infinity()
    )
    rows = run(settings, stream)

    late_window_end = datetime(2026, 11, 25, 0, 25, tzinfo=UTC)
    assert sorted(rows, key=key) == [
        GB_ON_TIME_ROW,
        expected(LATE_WINDOW, late_window_end, "s-gb", "ON_TIME", events=1, active_players=1,
                 vip_players=1, bets=1, stake_eur=Decimal("3.30"), ggr_eur=Decimal("3.30")),
    ]  # fmt: skip


def test_event_exactly_at_end_plus_lateness_never_gives_a_partial_pane(
    settings: Settings, loaded_lake: Lake
) -> None:
    stream = (
        BeamTestStream()
        .advance_watermark_to(Timestamp.from_utc_datetime(A))
        .add_elements([batch(*GB_ON_TIME)])
        .advance_watermark_to(A_END)
        .advance_watermark_to(A_CLOSES)  # arrived_too_late says: late from here on
        .add_elements(
            [batch(event(40, "bet_placed", "2026-11-25T00:04:00Z", "p1", "s-gb", amount=2))]
        )
        .advance_watermark_to_infinity()
    )
    rows = run(settings, stream)

    # Either the event is dropped (as arrived_too_late flags it) or it joins the whole window;
    # a pane that forgets the on-time events must never be emitted.
    late = {"events": 4, "bets": 3, "stake_eur": Decimal("18.76"), "ggr_eur": Decimal("18.76")}
    whole = GB_ON_TIME_ROW | late | {"pane": "LATE"}
    gb = rows_of(rows, A, "s-gb")
    assert gb in ([GB_ON_TIME_ROW], [GB_ON_TIME_ROW, whole]), [
        (r["pane"], r["events"], r["bets"], r["stake_eur"]) for r in gb
    ]
