"""Pure tests of :class:`streaming.ledger.EventLedger`: lateness decided once (CONTRACT.md
"Late data"), each event stored once and counted at most once per run."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from betlake.core.contract import TIMESTAMP
from betlake.core.windowing import Windowing
from streaming.ledger import ClosedWindow, EventLedger

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
    d = ledger.decide(ids, np.array(starts, dtype=np.int64), np.array(late, dtype=bool))
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


def test_a_closed_window_knows_each_of_its_events_and_no_other() -> None:
    flags = {f"event-{i}": i % 3 == 0 for i in range(100_000)}
    closed = ClosedWindow(flags)
    assert all(closed.get(event_id) == flag for event_id, flag in flags.items())
    assert [closed.get(f"other-{i}") for i in range(10_000)] == [None] * 10_000
    closed["other-1"] = True
    assert closed.get("other-1") is True and len(closed) == 100_001
