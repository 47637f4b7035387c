"""The drain's view of the topic (``TopicEnds``): readers of several partitions poll it at
once, and none may take a busy topic for quiet."""

from __future__ import annotations

import threading
import time
from itertools import count

import pytest

from betlake.core.config import Settings
from streaming import kafka_source
from streaming.kafka_source import TopicEnds


def test_a_reader_polling_while_another_polls_sees_the_topic_move(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every read found messages for a minute (no poll then); two readers then find nothing
    at once. The second must not get the ends and the quiet time of before the first's poll."""
    offsets = count(100)

    def slow_end_offsets(consumer, settings, partitions):
        time.sleep(0.3)
        return {p: next(offsets) for p in partitions}

    monkeypatch.setattr(kafka_source, "end_offsets", slow_end_offsets)
    ends = TopicEnds(settings, [0])
    now = time.monotonic()
    ends.ends, ends.polled, ends.moved = {0: 1}, now - 60, now - 60
    first = threading.Thread(target=ends.poll, args=(None, now))
    first.start()
    time.sleep(0.05)

    seen = ends.poll(None, now + 0.05)
    first.join()

    assert seen == {0: 100}
    assert ends.quiet_for(now + 0.05) < 1
