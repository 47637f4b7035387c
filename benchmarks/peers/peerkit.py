"""What every peer script shares: its job, the event rules, a window's figures and its report.

The peer scripts import this module from beside them inside their own venvs, so it needs only
the standard library and orjson, and imports nothing of betlake.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import orjson

# betlake.core.contract's event types (a peer cannot import betlake)
EVENT_TYPES = frozenset(
    {"session_start", "session_end", "bet_placed", "bet_settled", "deposit", "withdrawal",
     "page_view", "heartbeat"}
)  # fmt: skip
MONEY_EVENT_TYPES = frozenset({"bet_placed", "bet_settled", "deposit", "withdrawal"})


@dataclass(frozen=True)
class Job:
    """What to read and how to window it: the peer's one argument, as JSON."""

    bootstrap: str
    topic: str
    ends: dict[int, int]  # partition -> end offset captured before the peer started
    window_seconds: int
    grace_seconds: int  # out-of-orderness bound + allowed lateness
    max_clock_skew_seconds: int

    @classmethod
    def from_argv(cls) -> Job:
        given = orjson.loads(sys.argv[1])
        given["ends"] = {int(p): int(end) for p, end in given["ends"].items()}
        return cls(**given)

    @property
    def messages(self) -> int:
        return sum(self.ends.values())


class Event(NamedTuple):
    """A valid event: what the windows need of it, money as float."""

    event_id: str
    kind: str
    player_id: str
    site_id: str
    ms: int  # event time, epoch milliseconds
    amount: float


def _event_ms(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is not None:
            return int(moment.timestamp() * 1000)
    return None


def _amount(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        amount = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return amount if 0 <= amount < float("inf") else None


def parse(raw: bytes | None, future_ms: int) -> Event | None:
    """The event in a message, or None if it breaks a rule: JSON object, non-empty string ids,
    a known event type, an RFC 3339 or epoch-ms time no later than ``future_ms``, a
    non-negative amount on money events (betlake's rules, without its decimal checks)."""
    try:
        obj = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    event_id, kind = obj.get("event_id"), obj.get("event_type")
    player_id, site_id = obj.get("player_id"), obj.get("site_id")
    if not (isinstance(event_id, str) and isinstance(player_id, str) and isinstance(site_id, str)
            and event_id and player_id and site_id and kind in EVENT_TYPES):  # fmt: skip
        return None
    ms = _event_ms(obj.get("event_time"))
    if ms is None or ms > future_ms:
        return None
    amount = _amount(obj.get("amount")) if kind in MONEY_EVENT_TYPES else 0.0
    if amount is None:
        return None
    return Event(event_id, kind, player_id, site_id, ms, amount)


class Figures:
    """A window's figures for one site, as betlake's gold counts them where a peer can: events,
    distinct players, sessions, bets, stake and payout (float sums, not decimal; no FX)."""

    __slots__ = ("bets", "events", "payout", "players", "sessions", "stake")

    def __init__(self) -> None:
        self.events = self.sessions = self.bets = 0
        self.players: set[str] = set()
        self.stake = self.payout = 0.0

    def add(self, event: Event) -> Figures:
        self.events += 1
        self.players.add(event.player_id)
        if event.kind == "session_start":
            self.sessions += 1
        elif event.kind == "bet_placed":
            self.bets += 1
            self.stake += event.amount
        elif event.kind == "bet_settled":
            self.payout += event.amount
        return self

    def merge(self, other: Figures) -> Figures:
        self.events += other.events
        self.players |= other.players
        self.sessions += other.sessions
        self.bets += other.bets
        self.stake += other.stake
        self.payout += other.payout
        return self


@dataclass
class Tally:
    """What a peer counted, and when it read its first message and emitted its last window."""

    job: Job
    messages: int = 0  # read from Kafka
    malformed: int = 0
    duplicates: int = 0
    late: int = 0  # valid, distinct, but their window had closed: dropped
    windows: int = 0  # (window, site) results emitted
    in_windows: int = 0  # events summed over the emitted windows
    first_read: float | None = None
    last_emit: float = 0.0
    consumed: float | None = None  # when the backlog's last message had been processed
    future_ms: int = field(init=False)

    def __post_init__(self) -> None:
        self.future_ms = int((time.time() + self.job.max_clock_skew_seconds) * 1000)

    def read(self, raw: bytes | None) -> Event | None:
        """Count a message read from Kafka; its event, or None (counted malformed)."""
        if self.first_read is None:
            self.first_read = time.perf_counter()
        self.messages += 1
        event = parse(raw, self.future_ms)
        if event is None:
            self.malformed += 1
        return event

    def emitted(self, events: int) -> None:
        self.windows += 1
        self.in_windows += events
        self.last_emit = time.perf_counter()

    def report(self, **extra: object) -> None:
        """Print the one JSON line: the time runs from the first message read to the later of
        the last window emitted and the backlog's end (``consumed``, else now)."""
        consumed = self.consumed or time.perf_counter()
        seconds = max(self.last_emit, consumed) - (self.first_read or consumed)
        valid = self.messages - self.malformed - self.duplicates
        print(orjson.dumps({
            "events_per_s": valid / seconds if seconds > 0 else 0.0, "seconds": seconds,
            "messages": self.messages, "expected_messages": self.job.messages,
            "malformed": self.malformed, "duplicates": self.duplicates, "valid": valid,
            "late": self.late, "windows": self.windows, "in_windows": self.in_windows, **extra,
        }).decode(), flush=True)  # fmt: skip
