"""Pure tests of the stream's lateness rules: :class:`PartitionWatermark` (the per-partition
watermark of CONTRACT.md "Late data"), :class:`Windowing`'s ``too_late`` and
``arrival_watermarks``, and how they fit the stream's rule for forgetting a window."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from betlake.core.windowing import Windowing
from streaming.kafka_source import PartitionWatermark

S = 1_000_000  # microseconds in a second
WINDOW = 300
LATENESS = 900
BOUND = 30  # max_out_of_orderness_seconds
IDLE = 30  # idle_timeout_seconds
RULES = Windowing(WINDOW, BOUND, LATENESS)
T0 = 1_795_564_800 * S  # 2026-11-25T00:00:00Z, a window start
WALL = T0 + 3_600 * S  # the wall clock, an hour later


def fresh() -> tuple[PartitionWatermark, float]:
    """A partition watermark and a 'now' just after it last saw a message (not idle). The
    clock times are exact binary fractions, so now + IDLE - now is exactly IDLE."""
    clock = PartitionWatermark(BOUND, IDLE)
    clock.last_message = 1000.0
    return clock, 1000.5


# ---------------------------------------------------------------- PartitionWatermark


def test_no_watermark_before_any_event() -> None:
    clock, now = fresh()
    assert clock.value(now, WALL) is None


def test_a_poll_without_valid_events_leaves_it_unknown() -> None:
    clock, now = fresh()
    clock.observe(None, now)
    assert clock.value(now + 1, WALL) is None


def test_watermark_is_max_event_time_minus_the_bound() -> None:
    clock, now = fresh()
    clock.observe(T0 + 100 * S, now)
    assert clock.value(now, WALL) == T0 + 70 * S
    clock.observe(T0 + 250 * S, now + 1)
    assert clock.value(now + 1, WALL) == T0 + 220 * S


def test_older_events_never_move_it_back() -> None:
    clock, now = fresh()
    clock.observe(T0 + 250 * S, now)
    clock.observe(T0 + 10 * S, now + 1)  # out of order
    clock.observe(None, now + 2)  # only invalid messages
    assert clock.value(now + 2, WALL) == T0 + 220 * S


def test_idle_partition_follows_the_wall_clock() -> None:
    clock, now = fresh()
    clock.observe(T0 + 100 * S, now)
    assert clock.idle_for(now + IDLE) == IDLE
    assert clock.value(now + IDLE - 0.001, WALL) == T0 + 70 * S  # not idle yet
    assert clock.value(now + IDLE, WALL) == WALL - BOUND * S  # idle: does not hold the job


def test_idle_partition_without_events_follows_the_wall_clock() -> None:
    clock, _ = fresh()
    assert clock.value(clock.last_message + IDLE, WALL) == WALL - BOUND * S


def test_idle_partition_never_falls_behind_its_own_events() -> None:
    clock, now = fresh()
    clock.observe(WALL + 5 * S, now)  # a producer clock slightly ahead
    assert clock.value(now + IDLE, WALL) == WALL - 25 * S


def test_a_message_ends_idleness() -> None:
    clock, now = fresh()
    clock.observe(T0 + 100 * S, now)
    clock.observe(T0 + 200 * S, now + IDLE + 5)
    assert clock.value(now + IDLE + 6, WALL) == T0 + 170 * S


# ---------------------------------------------------------------- too_late


def starts(*seconds: int) -> np.ndarray:
    return np.array([T0 + s * S for s in seconds], dtype=np.int64)


def test_exactly_at_end_plus_lateness_is_late() -> None:
    closes = T0 + (WINDOW + LATENESS) * S
    assert RULES.too_late(starts(0), closes).tolist() == [True]
    assert RULES.too_late(starts(0), closes - 1).tolist() == [False]
    assert RULES.too_late(starts(0), closes + 1).tolist() == [True]


def test_within_lateness_past_the_window_end_is_not_too_late() -> None:
    end = T0 + WINDOW * S
    assert RULES.too_late(starts(0), end).tolist() == [False]
    assert RULES.too_late(starts(0), end + 600 * S).tolist() == [False]


def test_each_event_is_judged_by_its_own_window() -> None:
    watermark = T0 + (WINDOW + LATENESS) * S  # closes window 0, not window 300
    late = RULES.too_late(starts(0, 300, 0, 600), watermark)
    assert late.dtype == bool
    assert late.tolist() == [True, False, True, False]


def test_no_watermark_means_nothing_is_late() -> None:
    late = RULES.too_late(starts(0, -(10**6)), None)
    assert late.dtype == bool
    assert late.tolist() == [False, False]


def test_zero_lateness_closes_at_the_window_end() -> None:
    end = T0 + WINDOW * S
    assert Windowing(WINDOW, BOUND, 0).too_late(starts(0), end).tolist() == [True]
    assert Windowing(WINDOW, BOUND, 0).too_late(starts(0), end - 1).tolist() == [False]


def test_empty_batch() -> None:
    assert RULES.too_late(starts(), T0).tolist() == []
    assert RULES.too_late(starts(), None).tolist() == []


# ---------------------------------------------------------------- counted events keep their window


@pytest.mark.parametrize("lateness", [0, 1, LATENESS])
def test_a_counted_event_reaches_its_window_before_it_is_forgotten(lateness: int) -> None:
    """A read's partials carry the watermark before the read, and WindowPanesFn forgets a
    window once the watermark reaches its end plus the allowed lateness: every event the
    source counts (not too late at the watermark it arrived with) must be in a window that
    is still kept at that timestamp."""
    rules = Windowing(WINDOW, BOUND, lateness)
    rng = np.random.default_rng(7)
    # watermarks at and around window boundaries and closing times, plus random ones
    edges = [T0 + k * WINDOW * S + d for k in range(-2, 12) for d in (-1, 0, 1)]
    befores = [*edges, *(T0 + int(x) for x in rng.integers(-600 * S, 3_600 * S, 200))]
    checked = 0
    for before in befores:
        for sample in itertools.chain(
            [np.arange(-5, 10, dtype=np.int64)],
            (rng.integers(-5, 10, size) for size in (1, 3, 8)),
        ):
            times = T0 + sample * WINDOW * S + rng.integers(0, WINDOW * S, len(sample))
            window_starts = rules.start_us(times)
            late = rules.too_late(window_starts, rules.arrival_watermarks(times, before))
            for start in window_starts[~late].tolist():
                assert rules.closes_us(start) > before, (start, before)
                checked += 1
    assert checked > 1_000


def test_each_event_of_a_read_is_judged_by_the_watermark_as_it_arrived() -> None:
    """A restarted job's first read holds a whole backlog: an event that arrived after the
    partition had seen a much later one is too late, even with no watermark before the read."""
    times = np.array([T0 + 2000 * S, T0, T0 + 2100 * S], dtype=np.int64)
    watermarks = RULES.arrival_watermarks(times, None)
    assert watermarks[1] == watermarks[2] == T0 + (2000 - BOUND) * S
    assert RULES.too_late(RULES.start_us(times), watermarks).tolist() == [False, True, False]


def test_the_watermark_before_a_read_still_counts_for_its_first_events() -> None:
    times = np.array([T0, T0 + 10 * S], dtype=np.int64)
    before = T0 + 3000 * S
    assert RULES.arrival_watermarks(times, before).tolist() == [before, before]
    assert RULES.arrival_watermarks(np.array([], dtype=np.int64), before).tolist() == []
