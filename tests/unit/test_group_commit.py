"""GroupCommit: the stream's panes are written a batch at a time, whatever the bundles."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from streaming.sinks import GroupCommit


class SlowWrites:
    """A write that records its batches and, for the first one, waits until let go."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.writing, self.let_go = threading.Event(), threading.Event()

    def __call__(self, items: list[int]) -> None:
        self.batches.append(items)
        if len(self.batches) == 1:
            self.writing.set()
            assert self.let_go.wait(10)


def test_what_queues_behind_a_slow_write_goes_in_one_write() -> None:
    write = SlowWrites()
    commit = GroupCommit(write)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(commit.submit, [0])
        assert write.writing.wait(10)
        later = [pool.submit(commit.submit, [n, n + 100]) for n in range(1, 8)]
        while len(commit.queued) < 7:  # every later caller has handed its items over
            time.sleep(0.01)
        write.let_go.set()
        for done in [first, *later]:
            done.result(10)
    assert write.batches[0] == [0]
    assert len(write.batches) == 2, "the seven waiting callers share one write"
    assert sorted(write.batches[1]) == sorted([n for k in range(1, 8) for n in (k, k + 100)])


def test_a_failed_write_raises_and_the_next_is_written() -> None:
    calls: list[list[int]] = []

    def write(items: list[int]) -> None:
        calls.append(items)
        if 13 in items:
            raise OSError("the lake is away")

    commit = GroupCommit(write)
    with pytest.raises(OSError, match="the lake is away"):
        commit.submit([13])
    commit.submit([14])  # the writer is free again and its queue empty
    assert calls == [[13], [14]]


def test_a_waiting_caller_of_a_failed_batch_raises_too() -> None:
    write = SlowWrites()

    def failing(items: list[int]) -> None:
        write(items)
        raise OSError("commit failed")

    commit = GroupCommit(failing)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(commit.submit, [1])
        assert write.writing.wait(10)
        second, third = pool.submit(commit.submit, [2]), pool.submit(commit.submit, [3])
        while len(commit.queued) < 2:
            time.sleep(0.01)
        write.let_go.set()
        for done in (first, second, third):
            with pytest.raises(OSError, match="commit failed"):
                done.result(10)
    assert write.batches == [[1], [2, 3]] or write.batches == [[1], [3, 2]]
