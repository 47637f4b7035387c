"""The loop a user would write by hand: confluent-kafka batches, orjson, a set of event ids,
a dict of figures per (window, site). The watermark is the least of the partitions' latest
event times (a partition read to its end no longer counts), taken after each batch: a window
closes (counted, written nowhere) once it passes the window's end + grace, and later events
for it are dropped as late.

    <venv>/bin/python handwritten.py '{"bootstrap": ..., "topic": ..., "ends": {...}, ...}'
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition
from peerkit import Figures, Job, Tally


def main() -> None:
    job = Job.from_argv()
    tally = Tally(job)
    consumer = Consumer({
        "bootstrap.servers": job.bootstrap, "group.id": f"peer-handwritten-{time.time_ns()}",
        "enable.auto.commit": False, "fetch.wait.max.ms": 100,
    })  # fmt: skip
    consumer.assign([TopicPartition(job.topic, p, 0) for p, end in job.ends.items() if end])
    left = {p: end for p, end in job.ends.items() if end}
    window_ms, grace_ms = job.window_seconds * 1000, job.grace_seconds * 1000
    seen: set[str] = set()
    open_windows: dict[tuple[int, str], Figures] = {}
    latest = dict.fromkeys(left, -(2**62))  # partition -> its latest event time (ms)
    watermark = -(2**62)
    while left:
        for message in consumer.consume(10_000, 0.5):
            if message.error():
                continue
            partition, offset = message.partition(), message.offset()
            if partition not in left or offset >= left[partition]:
                continue
            if offset + 1 >= left[partition]:
                del left[partition]
            event = tally.read(message.value())
            if event is None:
                continue
            if event.event_id in seen:
                tally.duplicates += 1
                continue
            seen.add(event.event_id)
            start = event.ms - event.ms % window_ms
            if event.ms > latest[partition]:
                latest[partition] = event.ms
            if start + window_ms + grace_ms <= watermark:
                tally.late += 1
                continue
            key = (start, event.site_id)
            figures = open_windows.get(key)
            if figures is None:
                figures = open_windows[key] = Figures()
            figures.add(event)
        watermark = max(watermark, min((latest[p] for p in left), default=watermark))
        closed = [key for key in open_windows if key[0] + window_ms + grace_ms <= watermark]
        for key in closed:
            tally.emitted(open_windows.pop(key).events)
    for figures in open_windows.values():  # the end of the backlog closes every window
        tally.emitted(figures.events)
    tally.consumed = time.perf_counter()
    consumer.close()
    tally.report()


if __name__ == "__main__":
    main()
