"""Event-time windows and lateness, in one value: CONTRACT.md "Time and windows", "Late data".

Every rule about which window an event is in, when a window closes for the stream, how long
Beam keeps it, how high the watermark may go, and when the stream's offsets may commit is a
method of :class:`Windowing`. Times are epoch microseconds (``*_us``) unless typed datetime.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from betlake.core.config import BetlakeError, Settings

US = 1_000_000  # microseconds in a second
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_utc(value: datetime) -> datetime:
    """An aware datetime in UTC; a naive one is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def epoch_us(value: datetime) -> int:
    """Microseconds since the Unix epoch of a datetime (naive means UTC)."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return (aware - _EPOCH) // timedelta(microseconds=1)  # no astimezone: year 1 at +01:00


def whole_millis(micros: int) -> int:
    """``micros`` rounded up to a whole millisecond. Runners keep timers in milliseconds (Prism
    fires a timer set at 12.345678 s with the time 12.345 s): a time a timer is set at, and
    judged by when it fires, must be one of theirs, or it never passes and fires forever."""
    return -(-micros // 1000) * 1000


def from_epoch_us(value_us: int) -> datetime:
    """The UTC datetime of epoch microseconds, exactly."""
    return _EPOCH + timedelta(microseconds=value_us)


@dataclass(frozen=True)
class Windowing:
    """Fixed epoch-aligned windows of ``window_seconds``, a watermark that trails the latest
    event time by ``out_of_orderness_seconds``, and ``allowed_lateness_seconds`` after a
    window's end during which late events still count in the stream's figures."""

    window_seconds: int = 300
    out_of_orderness_seconds: int = 30
    allowed_lateness_seconds: int = 900

    @classmethod
    def of(cls, settings: Settings) -> Windowing:
        return cls(
            settings.window_seconds,
            settings.max_out_of_orderness_seconds,
            settings.allowed_lateness_seconds,
        )

    @property
    def window_us(self) -> int:
        return self.window_seconds * US

    @property
    def width(self) -> timedelta:
        return timedelta(seconds=self.window_seconds)

    def start_us(self, event_time_us: np.ndarray) -> np.ndarray:
        """Start of the window holding each event time."""
        return event_time_us - event_time_us % self.window_us

    def closes_us(self, window_start_us: np.ndarray | int) -> np.ndarray | int:
        """When each window closes for the stream: its end plus the allowed lateness."""
        return window_start_us + (self.window_seconds + self.allowed_lateness_seconds) * US

    def too_late(
        self, window_start_us: np.ndarray, watermark_us: int | np.ndarray | None
    ) -> np.ndarray:
        """Whether each event's window had closed by the watermark when it arrived (one for
        all, or one per event): such an event is flagged ``arrived_late`` and left out of the
        figures."""
        if watermark_us is None:
            return np.zeros(len(window_start_us), dtype=bool)
        return self.closes_us(window_start_us) <= watermark_us

    def arrival_watermarks(self, event_time_us: np.ndarray, before_us: int | None) -> np.ndarray:
        """The partition's watermark as each event of one read (in offset order) arrived: the
        watermark before the read, raised by the read's earlier events (the highest event time
        seen minus the out-of-orderness bound). A read of a long backlog (a restarted job's
        first) judges each event where it stands, not all by the watermark before it."""
        unknown = np.iinfo(np.int64).min
        seen = np.maximum.accumulate(event_time_us) - self.out_of_orderness_seconds * US
        earlier = np.concatenate(([unknown], seen[:-1])) if len(seen) else seen
        return np.maximum(earlier, unknown if before_us is None else before_us)

    def commit_after_us(self, window_start_us: int) -> int:
        """When the offsets that fed a window may be committed: one window after it closed,
        so no event that window may still count is left unread by a restart."""
        return self.closes_us(window_start_us) + self.window_us

    def check_range(
        self, start: datetime, end: datetime, names: tuple[str, str] = ("start", "end")
    ) -> tuple[datetime, datetime]:
        """[start, end) in UTC, or a :class:`BetlakeError` (naming the bounds by ``names``)
        unless it is a non-empty range of whole windows."""
        start, end = to_utc(start), to_utc(end)
        for name, value in zip(names, (start, end), strict=True):
            if epoch_us(value) % self.window_us:
                raise BetlakeError(
                    f"{name} {value:%Y-%m-%dT%H:%M:%SZ} is not on a window boundary "
                    f"(windows are {self.window_seconds} s from the epoch)"
                )
        if end <= start:
            raise BetlakeError(f"{names[1]} must be after {names[0]}")
        return start, end
