"""Pure tests of :class:`streaming.ledger.EventLedger`: lateness decided once (CONTRACT.md
"Late data"), each event stored once and counted at most once per run."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from betlake.core.contract import TIMESTAMP
from betlake.core.windowing import Windowing
from streaming.ledger import EventLedger

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


def test_windows_are_forgotten_once_every_partition_has_closed_them() -> None:
    bronze = Bronze([("a", W0, False)])
    ledger = EventLedger(bronze, [0, 1], Windowing(300, 30, 900))
    decide(ledger, ["a", "b"], [W0, W1], [False, False])
    closes = W0 + 1200 * S
    ledger.advance(0, closes)
    ledger.advance(1, closes - 1)  # partition 1 still keeps W0 open
    assert ledger.windows() == 2
    ledger.advance(1, closes)
    assert ledger.windows() == 1
    # a later duplicate of a forgotten window is looked up again, and counted no more
    assert decide(ledger, ["a"], [W0], [True]) == ([False], [False], [False])
    assert bronze.asked[-1] == [W0]
