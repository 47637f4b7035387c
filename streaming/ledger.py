"""Lateness decided once: what the stream knows of each open window's events.

CONTRACT.md "Late data": an event's lateness is decided when it is first stored in bronze, and
every re-read (after a restart, a crash, a duplicate delivery) obeys the stored decision. The
:class:`EventLedger` holds, per window, bronze's ``arrived_late`` flag of every event it has
(loaded once per window from the lake, then kept up to date by this run's own decisions) and
the events this run has counted into its figures, so that a read is split into what to store
(events bronze lacks), and what to count (on-time events this run has not counted yet).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from betlake.core.windowing import Windowing

# window starts (epoch us) -> bronze's (event_id, window_start, arrived_late) rows in them
BronzeLoader = Callable[[list[int]], pa.Table]


@dataclass(frozen=True)
class Decision:
    """Per event of a read: its lateness for good, whether bronze still lacks it, and whether
    this run's figures take it now."""

    late: np.ndarray
    store: np.ndarray
    count: np.ndarray


class EventLedger:
    """Bronze's lateness decisions and this run's counted events, per open window.

    Shared by every reader of a worker (thread-safe). A window is forgotten once the watermark
    of every partition has passed its close (end plus allowed lateness): nothing is counted
    into it any more, and an event for it that comes later is looked up in bronze again.
    """

    def __init__(
        self,
        load: BronzeLoader,
        partitions: list[int],
        windowing: Windowing,
    ) -> None:
        self.load = load
        self.partitions = frozenset(partitions)
        self.windowing = windowing
        self.lock = threading.Lock()
        self.flags: dict[int, dict[str, bool]] = {}  # window start -> event_id -> arrived_late
        self.counted: dict[int, set[str]] = {}  # window start -> event_ids in this run's figures
        self.watermarks: dict[int, int] = {}  # partition -> its latest watermark

    def decide(
        self, event_ids: list[str], window_starts: np.ndarray, late_by_watermark: np.ndarray
    ) -> Decision:
        """Split one read's events (in arrival order): an event bronze has keeps its stored
        flag; a new one takes ``late_by_watermark``. Only events on time by both are counted:
        an on-time event of a window the watermark has closed was counted when it was open."""
        n = len(event_ids)
        late, store, count = (np.zeros(n, dtype=bool) for _ in range(3))
        with self.lock:
            self._load_missing(window_starts)
            for i, (event_id, start) in enumerate(zip(event_ids, window_starts.tolist(),
                                                      strict=True)):  # fmt: skip
                flags = self.flags[start]
                stored = flags.get(event_id)
                if stored is None:
                    stored = flags[event_id] = bool(late_by_watermark[i])
                    store[i] = True
                late[i] = stored
                if not stored and not late_by_watermark[i]:
                    counted = self.counted.setdefault(start, set())
                    if event_id not in counted:
                        counted.add(event_id)
                        count[i] = True
        return Decision(late=late, store=store, count=count)

    def _load_missing(self, window_starts: np.ndarray) -> None:
        missing = sorted(set(np.unique(window_starts).tolist()) - self.flags.keys())
        if not missing:
            return
        for start in missing:
            self.flags[start] = {}
        rows = self.load(missing)
        starts = pc.cast(rows.column("window_start"), pa.int64()).to_pylist()
        for event_id, start, flag in zip(rows.column("event_id").to_pylist(), starts,
                                         rows.column("arrived_late").to_pylist(),
                                         strict=True):  # fmt: skip
            self.flags[start].setdefault(event_id, bool(flag))

    def advance(self, partition: int, watermark_us: int) -> None:
        """Note a partition's watermark; forget the windows every known partition has closed."""
        with self.lock:
            self.watermarks[partition] = max(watermark_us, self.watermarks.get(partition, 0))
            if self.watermarks.keys() < self.partitions:
                return  # a partition not heard of yet may still hold any window open
            lowest = min(self.watermarks.values())
            for start in [s for s in self.flags if self.windowing.closes_us(s) <= lowest]:
                del self.flags[start]
                self.counted.pop(start, None)

    def windows(self) -> int:
        """How many windows the ledger holds (for tests and logs)."""
        return len(self.flags)
