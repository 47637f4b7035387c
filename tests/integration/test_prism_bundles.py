"""Our Prism build (``scripts/prism/``) runs the restrictions of a splittable DoFn at once:
each in a bundle of its own, as the stream's reads of its Kafka partitions must be
(patch 5: an SDK processes the elements of one bundle one after the other); and counts the
metrics of bundles that end at once (patch 6)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import apache_beam as beam
import pytest
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration

from betlake.core.config import Settings
from streaming.runners import pipeline_options, prism_server

pytestmark = pytest.mark.integration
ROUNDS = 2  # each element's restriction: two rounds, the second after a checkpoint
ROUND_SECONDS = 0.5

# When each round of each element ran (monotonic seconds): the loopback worker runs in this
# process, and the DoFn refers to this module's dict.
_RAN: dict[int, list[tuple[int, float, float]]] = defaultdict(list)


class _Rounds(RestrictionProvider):
    def initial_restriction(self, element: int) -> OffsetRange:
        return OffsetRange(0, ROUNDS)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element: int, restriction: OffsetRange) -> int:
        return 1

    def split(self, element: int, restriction: OffsetRange):
        yield restriction


_TRACKER = beam.DoFn.RestrictionParam(_Rounds())


class _RoundsFn(beam.DoFn):
    """An element -> nothing; one round of ``ROUND_SECONDS`` per call, then a checkpoint."""

    def process(self, element: int, tracker=_TRACKER):
        position = tracker.current_restriction().start
        if not tracker.try_claim(position):
            return
        began = time.monotonic()
        time.sleep(ROUND_SECONDS)
        _RAN[position].append((element, began, time.monotonic()))
        if position + 1 < ROUNDS:
            tracker.defer_remainder(Duration(seconds=0))


def test_the_restrictions_of_a_splittable_dofn_run_at_once(settings: Settings) -> None:
    _RAN.clear()
    with (
        prism_server(settings.cache) as endpoint,
        beam.Pipeline(options=pipeline_options(settings, True, endpoint)) as pipeline,
    ):
        _ = pipeline | beam.Create([1, 2, 3]) | beam.ParDo(_RoundsFn())

    second = _RAN[ROUNDS - 1]  # the residuals, which came back pending together
    assert sorted(element for element, _, _ in second) == [1, 2, 3]
    latest_start = max(began for _, began, _ in second)
    earliest_end = min(ended for _, _, ended in second)
    assert latest_start < earliest_end, f"the residuals ran one after the other: {second}"


TOGETHER = 8  # restrictions whose bundles end at once
_ENDING = threading.Barrier(TOGETHER, timeout=60)


class _CountTogetherFn(beam.DoFn):
    """An element -> nothing; counts it once every restriction's bundle has got this far, so
    that they all end together."""

    def process(self, element: int, tracker=_TRACKER):
        if tracker.try_claim(0) and tracker.try_claim(1):
            _ENDING.wait()
            beam.metrics.Metrics.counter("test", "counted").inc()


def test_the_counters_of_bundles_that_end_at_once_add_up(settings: Settings) -> None:
    """A bundle's counters come back by short ids; a short id Prism did not know yet waited for
    its name under that id alone, so of bundles ending together before it knew it, one's value
    stood for all (the stream's drained runs counted a partition's messages short in CI)."""
    _ENDING.reset()
    with prism_server(settings.cache) as endpoint:
        pipeline = beam.Pipeline(options=pipeline_options(settings, True, endpoint))
        _ = pipeline | beam.Create(range(TOGETHER)) | beam.ParDo(_CountTogetherFn())
        result = pipeline.run()
        result.wait_until_finish()
        counted = result.metrics().query(MetricsFilter().with_name("counted"))["counters"]
    assert [c.committed for c in counted] == [TOGETHER]
