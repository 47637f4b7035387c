"""Quix Streams 3.28.1 peer: a new consumer group from the topic's earliest offset, a value
deserializer that parses each message (malformed ones become ``{}``, dropped by a filter; event
time from a timestamp extractor), dedup by event id in per-key RocksDB state (the key is the
player: a duplicate has the same one), ``group_by`` site (a repartition topic), a 300 s
tumbling window with ``grace_ms`` = grace, ``agg`` of counts, sums and the players collected,
``.final()``. Defaults otherwise (changelog topics, at-least-once). It stops when every
message up to the end offsets has been read and every event forwarded to the repartition
topic has been windowed: windows still open then (within grace of their site's latest event)
are never emitted, as ``.final()`` emits only on a later event.

    <venv>/bin/python quix_job.py '{"bootstrap": ..., "topic": ..., "ends": {...}, ...}'
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from peerkit import Event, Job, Tally
from quixstreams import Application, message_context
from quixstreams.dataframe.windows.aggregations import Collector, Count, Sum
from quixstreams.models.serializers import Deserializer


class DistinctCount(Collector):
    """How many distinct values a window collected."""

    def result(self, items: Any) -> int:
        return len(set(items))


def as_value(event: Event | None) -> dict:
    """An event as the dataframe's value: what the aggregations read."""
    if event is None:
        return {}
    kind = event.kind
    return {
        "event_id": event.event_id, "player_id": event.player_id, "site_id": event.site_id,
        "ms": event.ms, "session": int(kind == "session_start"), "bet": int(kind == "bet_placed"),
        "stake": event.amount if kind == "bet_placed" else 0.0,
        "payout": event.amount if kind == "bet_settled" else 0.0,
    }  # fmt: skip


def main() -> None:
    job = Job.from_argv()
    tally = Tally(job)
    left = {p: end for p, end in job.ends.items() if end}
    forwarded = windowed = 0

    class ParseEvent(Deserializer):
        def __call__(self, value: bytes, ctx: Any) -> dict:
            return as_value(tally.read(value))

    state_dir = tempfile.TemporaryDirectory(prefix="betlake-peer-quix-")
    app = Application(
        broker_address=job.bootstrap,
        consumer_group=f"peer-quix-{time.time_ns()}",
        auto_offset_reset="earliest",
        state_dir=state_dir.name,
    )
    topic = app.topic(
        job.topic,
        value_deserializer=ParseEvent(),
        key_deserializer="str",
        timestamp_extractor=lambda value, _headers, _ts, _type: value.get("ms", 0),
    )

    def stop_when_done() -> None:
        if not left and windowed == forwarded:
            tally.consumed = time.perf_counter()
            app.stop()

    def source_read(_value: dict) -> None:
        context = message_context()
        if context.offset + 1 >= left.get(context.partition, 0):
            left.pop(context.partition, None)
            stop_when_done()

    def first_time(value: dict, state: Any) -> bool:
        if state.get(value["event_id"]):
            tally.duplicates += 1
            return False
        state.set(value["event_id"], 1)
        return True

    def sent_on(_value: dict) -> None:
        nonlocal forwarded
        forwarded += 1

    def window_read(_value: dict) -> None:
        nonlocal windowed
        windowed += 1
        stop_when_done()

    def late(*_args: object) -> bool:
        tally.late += 1
        return False  # no log line per late event

    sdf = app.dataframe(topic)
    sdf = sdf.update(source_read).filter(bool).filter(first_time, stateful=True)
    sdf = sdf.update(sent_on).group_by("site_id").update(window_read)
    sdf = (
        sdf.tumbling_window(duration_ms=job.window_seconds * 1000,
                            grace_ms=job.grace_seconds * 1000, on_late=late)
        .agg(events=Count(), players=DistinctCount("player_id"), sessions=Sum("session"),
             bets=Sum("bet"), stake=Sum("stake"), payout=Sum("payout"))
        .final()
    )  # fmt: skip
    sdf.update(lambda window: tally.emitted(window["events"]))
    app.run()
    state_dir.cleanup()
    tally.report()


if __name__ == "__main__":
    main()
