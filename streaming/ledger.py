"""Lateness decided once: what the stream knows of each open window's events.

CONTRACT.md "Late data": an event's lateness is decided when it is first stored in bronze, and
every re-read (after a restart, a crash, a duplicate delivery) obeys the stored decision. The
:class:`EventLedger` holds, per window, bronze's ``arrived_late`` flag of every event it has
(loaded once per window from the lake, then kept up to date by this run's own decisions) and
the events this run has counted into its figures, so that a read is split into what to store
(events bronze lacks), and what to count (on-time events this run has not counted yet).

A closed window (no event counts into it any more) keeps only what bronze holds, compactly
(:class:`ClosedWindow`), for an hour of event time after its close and within a budget of
events: a late event for it is then decided without reading bronze, which would otherwise
happen on every read that carries one. Later than that, an event costs a read of its window
from bronze (events so late are few; a day of closed windows at 10,000 events/s would hold
860M events).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from betlake.core.windowing import US, Windowing

# window starts (epoch us) -> bronze's (event_id, window_start, arrived_late) rows in them
BronzeLoader = Callable[[list[int]], pa.Table]
CLOSED_EVENTS_KEPT = 8_000_000  # events of closed windows kept in memory (9 bytes each)
CLOSED_KEPT_SECONDS = 3600  # how long after its close (event time) a window's events are kept


class ClosedWindow:
    """Bronze's events of a closed window: the sorted 64-bit hashes of their ids with their
    ``arrived_late`` flags (9 bytes an event, not a dict entry), and the few added since.

    Two ids with one hash (odds about n / 2**64) would make the second look stored already."""

    def __init__(self, flags: dict[str, bool]) -> None:
        hashes = np.fromiter(map(hash, flags), np.int64, len(flags))
        order = np.argsort(hashes)
        self.hashes = hashes[order]
        self.late = np.fromiter(flags.values(), bool, len(flags))[order]
        self.added: dict[str, bool] = {}

    def __len__(self) -> int:
        return len(self.hashes) + len(self.added)

    def get(self, event_id: str) -> bool | None:
        """The event's stored flag, or None if bronze lacks it."""
        flag = self.added.get(event_id)
        if flag is None:
            key = hash(event_id)
            at = int(np.searchsorted(self.hashes, key))
            if at < len(self.hashes) and self.hashes[at] == key:
                flag = bool(self.late[at])
        return flag

    def __setitem__(self, event_id: str, flag: bool) -> None:
        self.added[event_id] = flag


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
    it any more, and its events move to a :class:`ClosedWindow`. Those are forgotten once the
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
        self.flags: dict[int, dict[str, bool]] = {}  # window start -> event_id -> arrived_late
        self.counted: dict[int, set[str]] = {}  # window start -> event_ids in this run's figures
        self.closed: OrderedDict[int, ClosedWindow] = OrderedDict()  # least recently used first
        self.watermarks: dict[int, int] = {}  # partition -> its latest watermark

    def decide(
        self, event_ids: list[str], window_starts: np.ndarray, late_by_watermark: np.ndarray
    ) -> Decision:
        """Split one read's events (in arrival order): an event bronze has keeps its stored
        flag; a new one takes ``late_by_watermark``. Only events on time by both are counted:
        an on-time event of a window the watermark has closed was counted when it was open."""
        late, store, count = [], [], []  # lists, then arrays: a numpy item set is slow
        with self.lock:
            windows = self._windows_of(window_starts)
            counting = {start: self.counted.setdefault(start, set())
                        for start in windows if start in self.flags}  # fmt: skip
            reads = zip(event_ids, window_starts.tolist(), late_by_watermark.tolist(), strict=True)
            for event_id, start, late_now in reads:
                flags = windows[start]
                stored = flags.get(event_id)
                store.append(stored is None)
                if stored is None:
                    stored = flags[event_id] = late_now
                late.append(stored)
                counted = None if stored or late_now else counting.get(start)
                if counted is None or event_id in counted:
                    count.append(False)
                else:
                    counted.add(event_id)
                    count.append(True)
        late, store, count = (np.array(column, dtype=bool) for column in (late, store, count))
        return Decision(late=late, store=store, count=count)

    def _windows_of(self, window_starts: np.ndarray) -> dict[int, dict | ClosedWindow]:
        """The windows of a read, open or closed, loading from bronze those the ledger lacks."""
        starts = set(np.unique(window_starts).tolist())
        for start in starts & self.closed.keys():
            self.closed.move_to_end(start)  # recently used: kept
        self._load_missing(sorted(starts - self.flags.keys() - self.closed.keys()), starts)
        return {start: self.flags[start] if start in self.flags else self.closed[start]
                for start in starts}  # fmt: skip

    def _load_missing(self, missing: list[int], in_use: set[int]) -> None:
        """Load windows from bronze: open ones into ``flags``, closed ones compactly."""
        if not missing:
            return
        loaded: dict[int, dict[str, bool]] = {start: {} for start in missing}
        rows = self.load(missing)
        starts = pc.cast(rows.column("window_start"), pa.int64()).to_pylist()
        for event_id, start, flag in zip(rows.column("event_id").to_pylist(), starts,
                                         rows.column("arrived_late").to_pylist(),
                                         strict=True):  # fmt: skip
            loaded[start].setdefault(event_id, bool(flag))
        lowest = self._lowest_watermark()
        for start, flags in loaded.items():
            if lowest is not None and self.windowing.closes_us(start) <= lowest:
                self._keep_closed(start, flags, in_use)
            else:
                self.flags[start] = flags

    def _lowest_watermark(self) -> int | None:
        """The lowest watermark of the partitions, once every one has been heard of."""
        if self.watermarks.keys() < self.partitions:
            return None  # a partition not heard of yet may still hold any window open
        return min(self.watermarks.values())

    def _keep_closed(self, start: int, flags: dict[str, bool], in_use: set[int]) -> None:
        """Keep a closed window's events compactly; forget the least recently used closed
        windows (but those of the read at hand) beyond the budget."""
        self.closed[start] = ClosedWindow(flags)
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
            for start in [s for s in self.flags if self.windowing.closes_us(s) <= lowest]:
                self._keep_closed(start, self.flags.pop(start), set())
                self.counted.pop(start, None)
            forgotten = lowest - self.closed_kept_us
            for start in [s for s in self.closed if self.windowing.closes_us(s) <= forgotten]:
                del self.closed[start]

    def windows(self) -> int:
        """How many open windows the ledger holds (for tests and logs)."""
        return len(self.flags)
