"""Bytewax 0.21.1 peer: the Kafka source from the topic's start (tail=False: each partition
ends at its end offset, the backlog's, as nothing writes to the topic meanwhile; a consumer per
partition, polled in turn, 1,000 messages at most: partitions advance together), parse and
drop malformed messages, dedup by event id in per-player state (the message key: a duplicate
has the same player), re-key by site, fold 300 s tumbling windows on an EventClock waiting
``grace_seconds`` (unordered fold: the figures do not depend on the order); late items are
counted and dropped. One worker in this process (``run_main``).

    <venv>/bin/python bytewax_job.py '{"bootstrap": ..., "topic": ..., "ends": {...}, ...}'
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
from bytewax.testing import run_main
from peerkit import Event, Figures, Job, Tally

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def main() -> None:
    job = Job.from_argv()
    tally = Tally(job)

    def first_time(seen: set[str] | None, event: Event) -> tuple[set[str], Event | None]:
        seen = set() if seen is None else seen
        if event.event_id in seen:
            tally.duplicates += 1
            return seen, None
        seen.add(event.event_id)
        return seen, event

    def late(_step: str, _item: object) -> None:
        tally.late += 1

    flow = Dataflow("betlake_peer")
    messages = op.input("kafka", flow, KafkaSource([job.bootstrap], [job.topic], tail=False))
    events = op.filter_map("parse", messages, lambda message: tally.read(message.value))
    by_player = op.key_on("by_player", events, lambda event: event.player_id)
    fresh = op.filter_map_value("dedup_drop", op.stateful_map("dedup", by_player, first_time),
                                lambda event: event)  # fmt: skip
    by_site = op.key_on("by_site", op.key_rm("unkey", fresh), lambda event: event.site_id)
    windows = fold_window(
        "windows",
        by_site,
        EventClock(lambda event: EPOCH + timedelta(milliseconds=event.ms),
                   wait_for_system_duration=timedelta(seconds=job.grace_seconds)),
        TumblingWindower(length=timedelta(seconds=job.window_seconds), align_to=EPOCH),
        Figures,
        Figures.add,
        Figures.merge,
        ordered=False,
    )  # fmt: skip
    op.inspect("emitted", windows.down, lambda _step, item: tally.emitted(item[1][1].events))
    op.inspect("late", windows.late, late)
    run_main(flow)
    tally.consumed = time.perf_counter()
    tally.report()


if __name__ == "__main__":
    main()
