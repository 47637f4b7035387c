"""Pure tests of :class:`streaming.ledger.EventLedger`: lateness decided once (CONTRACT.md
"Late data"), each event stored once and counted at most once per run."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from betlake_native import LedgerWindow
from betlake_native import decide as decide_events
from hypothesis import given, settings
from hypothesis import strategies as st

from betlake.core.contract import TIMESTAMP
from betlake.core.windowing import Windowing
from streaming.ledger import EventLedger, _bytes, _strings

S = 1_000_000
W0 = 1_795_564_800 * S  # a window start
W1 = W0 + 300 * S


class Bronze:
    """Rows of a fake bronze table, and the windows the ledger asked for."""

    def __init__(self, rows: list[tuple[str, int, bool]] = ()) -> None:
        self.rows = list(rows)
        self.asked: list[list[int]] = []

    def __call__(self, starts: list[int]) -> pa.Table:
        self.asked.append(starts)
        kept = [r for r in self.rows if r[1] in starts]
        return pa.table({
            "event_id": pa.array([r[0] for r in kept], pa.string()),
            "window_start": pa.array([r[1] for r in kept], pa.int64()).cast(TIMESTAMP),
            "arrived_late": pa.array([r[2] for r in kept], pa.bool_()),
        })  # fmt: skip


def decide(ledger: EventLedger, ids: list[str], starts: list[int], late: list[bool]):
    d = ledger.decide(pa.array(ids, pa.string()), np.array(starts, np.int64), np.array(late, bool))
    return d.late.tolist(), d.store.tolist(), d.count.tolist()


def test_new_events_take_the_watermarks_decision_and_are_stored() -> None:
    ledger = EventLedger(Bronze(), [0, 1], Windowing(300, 30, 900))
    assert decide(ledger, ["a", "b"], [W0, W0], [False, True]) == (
        [False, True], [True, True], [True, False])  # fmt: skip


def test_an_event_bronze_flags_late_stays_late_after_a_restart() -> None:
    """The bug of issue 7 (3): a re-read with a fresh watermark counted it as on time."""
    ledger = EventLedger(Bronze([("a", W0, True)]), [0, 1], Windowing(300, 30, 900))
    assert decide(ledger, ["a"], [W0], [False]) == ([True], [False], [False])


def test_an_event_bronze_has_on_time_is_counted_again_by_a_new_run_but_not_stored() -> None:
    ledger = EventLedger(Bronze([("a", W0, False)]), [0, 1], Windowing(300, 30, 900))
    assert decide(ledger, ["a"], [W0], [False]) == ([False], [False], [True])
    assert decide(ledger, ["a"], [W0], [False]) == ([False], [False], [False])  # a duplicate


def test_an_on_time_event_of_a_window_the_watermark_closed_is_not_counted_again() -> None:
    ledger = EventLedger(Bronze([("a", W0, False)]), [0, 1], Windowing(300, 30, 900))
    assert decide(ledger, ["a"], [W0], [True]) == ([False], [False], [False])


def test_duplicates_in_one_read_are_stored_and_counted_once() -> None:
    ledger = EventLedger(Bronze(), [0, 1], Windowing(300, 30, 900))
    assert decide(ledger, ["a", "a", "b"], [W0, W0, W1], [False, True, False]) == (
        [False, False, False], [True, False, True], [True, False, True])  # fmt: skip


def test_each_window_is_loaded_from_bronze_once() -> None:
    bronze = Bronze()
    ledger = EventLedger(bronze, [0, 1], Windowing(300, 30, 900))
    decide(ledger, ["a"], [W0], [False])
    decide(ledger, ["b", "c"], [W0, W1], [False, False])
    assert bronze.asked == [[W0], [W1]]


def test_windows_close_once_every_partition_has_closed_them() -> None:
    bronze = Bronze([("a", W0, False)])
    ledger = EventLedger(bronze, [0, 1], Windowing(300, 30, 900))
    decide(ledger, ["a", "b"], [W0, W1], [False, False])
    closes = W0 + 1200 * S
    ledger.advance(0, closes)
    ledger.advance(1, closes - 1)  # partition 1 still keeps W0 open
    assert ledger.windows() == 2
    ledger.advance(1, closes)
    assert ledger.windows() == 1
    # a later duplicate of the closed window is known without bronze, and counted no more
    assert decide(ledger, ["a"], [W0], [True]) == ([False], [False], [False])
    assert bronze.asked == [[W0, W1]]


def test_a_late_event_of_a_closed_window_is_stored_once() -> None:
    """The soak's finding: every read carrying an event of a closed window read bronze."""
    bronze = Bronze([("a", W0, False)])
    ledger = EventLedger(bronze, [0], Windowing(300, 30, 900))
    ledger.advance(0, W1 + 1200 * S)  # W0 and W1 closed before anything was read
    assert decide(ledger, ["x", "a"], [W0, W0], [True, True]) == (
        [True, False], [True, False], [False, False])  # fmt: skip
    assert decide(ledger, ["x", "y", "y"], [W0, W0, W0], [True, True, True]) == (
        [True, True, True], [False, True, False], [False, False, False])  # fmt: skip
    assert bronze.asked == [[W0]]  # loaded once, then kept closed


def test_closed_windows_beyond_the_budget_are_looked_up_in_bronze_again() -> None:
    bronze = Bronze([("a", W0, False), ("b", W1, True), ("c", W1, False)])
    ledger = EventLedger(bronze, [0], Windowing(300, 30, 900), closed_events_kept=2)
    ledger.advance(0, W1 + 1200 * S)
    decide(ledger, ["a"], [W0], [True])
    decide(ledger, ["b"], [W1], [True])  # 3 events kept closed: W0, the least recent, goes
    assert decide(ledger, ["a", "c"], [W0, W1], [True, True]) == (
        [False, False], [False, False], [False, False])  # fmt: skip
    assert bronze.asked == [[W0], [W1], [W0]]
    # a window of a read in hand is never the one forgotten, even over the budget
    assert len(ledger.closed) == 2


def test_closed_windows_are_forgotten_once_the_watermark_is_an_hour_past_their_close() -> None:
    """The soak's RSS climbed for 13 minutes: closed windows were kept for their events only,
    8M of them, 13 hours of the soak's event time."""
    bronze = Bronze([("a", W0, False), ("b", W1, False)])
    ledger = EventLedger(bronze, [0], Windowing(300, 30, 900), closed_kept_seconds=3600)
    decide(ledger, ["a", "b"], [W0, W1], [False, False])
    w0_forgotten = W0 + 1200 * S + 3600 * S
    ledger.advance(0, w0_forgotten - 1)
    assert list(ledger.closed) == [W0, W1]
    ledger.advance(0, w0_forgotten)
    assert list(ledger.closed) == [W1]
    assert decide(ledger, ["a", "b"], [W0, W1], [True, True]) == (
        [False, False], [False, False], [False, False])  # fmt: skip
    assert bronze.asked == [[W0, W1], [W0]]  # the forgotten window read again, W1 not


def native_window(ids: list[str], late: list[bool]) -> LedgerWindow:
    return LedgerWindow(*_strings(pa.array(ids, pa.string())), _bytes(np.array(late, bool)))


def native_decide(window: LedgerWindow, ids: list[str], late_now: bool) -> list[tuple]:
    late, store, count = decide_events(
        [window], np.zeros(len(ids), np.int64), *_strings(pa.array(ids, pa.string())),
        np.full(len(ids), late_now, np.uint8),
    )  # fmt: skip
    return list(zip(map(bool, late), map(bool, store), map(bool, count), strict=True))


def test_a_closed_window_knows_each_of_its_events_and_no_other() -> None:
    ids = [f"event-{i}" for i in range(100_000)]
    flags = [i % 3 == 0 for i in range(100_000)]
    window = native_window(ids, flags)
    window.close()
    assert native_decide(window, ids, late_now=False) == [(f, False, False) for f in flags]
    others = [f"other-{i}" for i in range(10_000)]
    assert native_decide(window, others, late_now=True) == [(True, True, False)] * 10_000
    assert native_decide(window, others, late_now=False) == [(True, False, False)] * 10_000
    assert len(window) == 110_000


def test_an_open_window_keeps_the_first_flag_of_an_id_bronze_has_twice() -> None:
    window = native_window(["a", "a", "b"], [True, False, False])
    assert len(window) == 2
    assert native_decide(window, ["a", "b", "b", "c"], late_now=False) == [
        (True, False, False), (False, False, True), (False, False, False), (False, True, True),
    ]  # fmt: skip


def test_the_native_ledger_refuses_inputs_that_do_not_line_up() -> None:
    window = native_window([], [])
    offsets, data = _strings(pa.array(["a", "b"]))
    with pytest.raises(ValueError, match="one window and one watermark flag an event"):
        decide_events([window], np.zeros(1, np.int64), offsets, data, np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="an event of no window given"):
        decide_events([window], np.ones(2, np.int64), offsets, data, np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="string offsets out of their data"):
        decide_events([window], np.zeros(2, np.int64), offsets, data[:1], np.zeros(2, np.uint8))


# Differential: the ledger against its rules written plainly, over random reads, watermarks and
# restarts (a new run over the same bronze), with a small budget so that closed windows are
# forgotten and read again.
IDS = ["a", "b", "c", "", "é", "a\x00", "ab", "x" * 128]
READ = st.lists(
    st.tuples(st.sampled_from(IDS), st.integers(0, 3), st.booleans()), min_size=1, max_size=12
)
STEP = st.one_of(
    st.tuples(st.just("read"), READ),
    st.tuples(st.just("advance"), st.tuples(st.integers(0, 1), st.integers(0, 40))),
    st.tuples(st.just("restart"), st.none()),
)


class Rules:
    """The ledger's rules, plainly: bronze's flag per (window, event), what this run counted,
    and each partition's watermark."""

    def __init__(self, windowing: Windowing, stored: dict[tuple[int, str], bool]) -> None:
        self.windowing = windowing
        self.stored = stored
        self.counted: set[tuple[int, str]] = set()
        self.watermarks: dict[int, int] = {}

    def closed(self, start: int) -> bool:
        heard_of_all = len(self.watermarks) == 2
        return heard_of_all and self.windowing.closes_us(start) <= min(self.watermarks.values())

    def decide(self, read: list[tuple[str, int, bool]]) -> tuple[list, list, list]:
        late, store, count = [], [], []
        for event_id, start, late_now in read:
            key = (start, event_id)
            store.append(key not in self.stored)
            flag = self.stored.setdefault(key, late_now)
            late.append(flag)
            counts = not (flag or late_now or self.closed(start) or key in self.counted)
            if counts:
                self.counted.add(key)
            count.append(counts)
        return late, store, count


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(steps=st.lists(STEP, max_size=25), kept_seconds=st.sampled_from([0, 600, 3600]))
def test_the_ledger_keeps_its_rules_over_any_reads_watermarks_and_restarts(
    steps: list, kept_seconds: int
) -> None:
    windowing = Windowing(300, 30, 900)
    bronze = Bronze()

    def new_ledger() -> EventLedger:
        return EventLedger(bronze, [0, 1], windowing, 2, kept_seconds)

    rules, ledger = Rules(windowing, {}), new_ledger()
    for kind, arg in steps:
        if kind == "read":
            read = [
                (event_id, W0 + window * 300 * S, late_now) for event_id, window, late_now in arg
            ]
            decided = decide(ledger, *(list(column) for column in zip(*read, strict=True)))
            assert decided == rules.decide(read)
            bronze.rows += [
                (event_id, start, late)
                for (event_id, start, _), late, stored in zip(
                    read, decided[0], decided[1], strict=True
                )
                if stored
            ]
        elif kind == "advance":
            partition, minutes = arg
            watermark = max(W0 + minutes * 60 * S, rules.watermarks.get(partition, 0))
            rules.watermarks[partition] = watermark
            ledger.advance(partition, watermark)
        else:
            rules, ledger = Rules(windowing, rules.stored), new_ledger()
