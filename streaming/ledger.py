"""Lateness decided once: what the stream knows of each open window's events.

CONTRACT.md "Late data": an event's lateness is decided when it is first stored in bronze, and
every re-read (after a restart, a crash, a duplicate delivery) obeys the stored decision. The
:class:`EventLedger` holds, per window, bronze's ``arrived_late`` flag of every event it has
(loaded once per window from the lake, then kept up to date by this run's own decisions) and
the events this run has counted into its figures, so that a read is split into what to store
(events bronze lacks), and what to count (on-time events this run has not counted yet).

The per-event work is native (``betlake_native``: a window's events by a keyed 127-bit hash
of their ids, 24 bytes each while it is open). A closed window (no event counts into it any
more) keeps only what bronze holds, 16 bytes an event, for an hour of event time after its
close and within a budget of events: a late event for it is then decided without reading
bronze, which would otherwise happen on every read that carries one. Later than that, an event
costs a read of its window from bronze (events so late are few; a day of closed windows at
10,000 events/s would hold 860M events).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from betlake_native import LedgerWindow
from betlake_native import decide as decide_events

from betlake.core.windowing import US, Windowing

# window starts (epoch us) -> bronze's (event_id, window_start, arrived_late) rows in them
BronzeLoader = Callable[[list[int]], pa.Table]
CLOSED_EVENTS_KEPT = 8_000_000  # events of closed windows kept in memory (16 bytes each)
CLOSED_KEPT_SECONDS = 3600  # how long after its close (event time) a window's events are kept


def _strings(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A string column as the native ledger takes it: its value offsets and its bytes."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    _, offsets, data = values.buffers()
    return (
        np.frombuffer(offsets, np.int32, len(values) + 1, values.offset * 4),
        np.frombuffer(data or b"", np.uint8),
    )


def _bytes(flags: np.ndarray) -> np.ndarray:
    """Booleans as the native ledger takes them: a byte each."""
    return np.ascontiguousarray(flags, dtype=bool).view(np.uint8)


@dataclass(frozen=True)
class Decision:
    """Per event of a read: its lateness for good, whether bronze still lacks it, and whether
    this run's figures take it now."""

    late: np.ndarray
    store: np.ndarray
    count: np.ndarray


class EventLedger:
    """Bronze's lateness decisions and this run's counted events, per open window.

    Shared by every reader of a worker (thread-safe). A window closes once the watermark of
    every partition has passed its close (end plus allowed lateness): nothing is counted into
    it any more, and its events are kept compactly. Closed windows are forgotten once the
    watermark is ``closed_kept_seconds`` past their close, or, least recently used first,
    beyond ``closed_events_kept`` events; an event for a forgotten window is looked up in
    bronze again.
    """

    def __init__(
        self,
        load: BronzeLoader,
        partitions: list[int],
        windowing: Windowing,
        closed_events_kept: int = CLOSED_EVENTS_KEPT,
        closed_kept_seconds: int = CLOSED_KEPT_SECONDS,
    ) -> None:
        self.load = load
        self.partitions = frozenset(partitions)
        self.windowing = windowing
        self.closed_events_kept = closed_events_kept
        self.closed_kept_us = closed_kept_seconds * US
        self.lock = threading.Lock()
        self.open: dict[int, LedgerWindow] = {}  # window start -> its events
        self.closed: OrderedDict[int, LedgerWindow] = OrderedDict()  # least recently used first
        self.watermarks: dict[int, int] = {}  # partition -> its latest watermark

    def decide(
        self,
        event_ids: pa.Array | pa.ChunkedArray,
        window_starts: np.ndarray,
        late_by_watermark: np.ndarray,
    ) -> Decision:
        """Split one read's events (in arrival order): an event bronze has keeps its stored
        flag; a new one takes ``late_by_watermark``. Only events on time by both are counted:
        an on-time event of a window the watermark has closed was counted when it was open."""
        starts, window_of = np.unique(window_starts, return_inverse=True)
        ids = _strings(event_ids)
        with self.lock:
            windows = self._windows_of(starts.tolist())
            late, store, count = decide_events(
                windows, window_of.astype(np.int64, copy=False), *ids, _bytes(late_by_watermark)
            )
        return Decision(*(np.frombuffer(flags, bool) for flags in (late, store, count)))

    def _windows_of(self, starts: list[int]) -> list[LedgerWindow]:
        """The windows of a read, open or closed, loading from bronze those the ledger lacks."""
        for start in self.closed.keys() & starts:
            self.closed.move_to_end(start)  # recently used: kept
        missing = [s for s in starts if s not in self.open and s not in self.closed]
        self._load_missing(missing, set(starts))
        return [self.open[start] if start in self.open else self.closed[start] for start in starts]

    def _load_missing(self, missing: list[int], in_use: set[int]) -> None:
        """Load windows from bronze: open ones as they are, closed ones compactly."""
        if not missing:
            return
        rows = self.load(missing)
        starts = pc.cast(rows.column("window_start"), pa.int64()).to_numpy()
        late = rows.column("arrived_late").to_numpy(zero_copy_only=False)
        lowest = self._lowest_watermark()
        for start in missing:
            mine = starts == start
            window = LedgerWindow(
                *_strings(rows.column("event_id").filter(mine)), _bytes(late[mine])
            )
            if lowest is not None and self.windowing.closes_us(start) <= lowest:
                self._keep_closed(start, window, in_use)
            else:
                self.open[start] = window

    def _lowest_watermark(self) -> int | None:
        """The lowest watermark of the partitions, once every one has been heard of."""
        if self.watermarks.keys() < self.partitions:
            return None  # a partition not heard of yet may still hold any window open
        return min(self.watermarks.values())

    def _keep_closed(self, start: int, window: LedgerWindow, in_use: set[int]) -> None:
        """Close a window and keep it; forget the least recently used closed windows (but
        those of the read at hand) beyond the budget."""
        window.close()
        self.closed[start] = window
        kept = sum(map(len, self.closed.values()))
        for old in [s for s in self.closed if s not in in_use and s != start]:
            if kept <= self.closed_events_kept:
                break
            kept -= len(self.closed.pop(old))

    def advance(self, partition: int, watermark_us: int) -> None:
        """Note a partition's watermark; close the windows every partition has closed, and
        forget the closed ones it is ``closed_kept_seconds`` past."""
        with self.lock:
            self.watermarks[partition] = max(watermark_us, self.watermarks.get(partition, 0))
            lowest = self._lowest_watermark()
            if lowest is None:
                return
            for start in [s for s in self.open if self.windowing.closes_us(s) <= lowest]:
                self._keep_closed(start, self.open.pop(start), set())
            forgotten = lowest - self.closed_kept_us
            for start in [s for s in self.closed if self.windowing.closes_us(s) <= forgotten]:
                del self.closed[start]

    def windows(self) -> int:
        """How many open windows the ledger holds (for tests and logs)."""
        return len(self.open)
