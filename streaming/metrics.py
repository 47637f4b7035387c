"""The stream's Beam counters: job totals (namespace ``betlake``) and per partition."""

from __future__ import annotations

import logging
import time
from collections import Counter

import apache_beam as beam

log = logging.getLogger("betlake.stream")
PARTITION_METRICS = "betlake.partition"  # counters per partition: read_<n>, drained_end_<n>


class Tally:
    """A DoFn's Beam counters, also logged (at most every ``every`` s) while the job runs."""

    def __init__(self, what: str, every: float = 30.0) -> None:
        self.what, self.every = what, every
        self.totals: Counter[str] = Counter()
        self.logged = time.monotonic()

    def add(self, **counts: int) -> None:
        for name, count in counts.items():
            if count:
                beam.metrics.Metrics.counter("betlake", name).inc(count)
                self.totals[name] += count
        if time.monotonic() - self.logged >= self.every:
            self.logged = time.monotonic()
            so_far = ", ".join(f"{name} {n}" for name, n in sorted(self.totals.items()))
            log.info("%s so far: %s", self.what, so_far)
