"""The streaming job: Kafka -> validated, stored -> SiteWindowStats -> gold and the stats topic,
with the stream group's offsets committed once the windows they fed are final."""

from __future__ import annotations

import logging
import signal
import threading

import apache_beam as beam
from apache_beam.runners.runner import PipelineState

from betlake.config import Settings
from betlake.kafka import ensure_topic, partitions_of
from betlake.lake import Lake
from betlake.reference import Reference
from streaming.kafka_source import ReadTelemetry
from streaming.runners import counters, pipeline_options
from streaming.sinks import STOPPING, CommitOffsetsFn, PublishPanesFn, StoreTelemetryFn
from streaming.windows import SiteWindowStats, beam_lateness_seconds

log = logging.getLogger("betlake.stream")
COUNTERS = (
    "messages_in",
    "events_in",
    "rejected",
    "too_late",
    "on_time_panes",
    "late_panes",
    "published",
)


def build_stream(
    pipeline: beam.Pipeline, settings: Settings, partitions: list[int], **read_options: object
) -> None:
    """Add the streaming job's transforms to ``pipeline``."""
    beam_lateness = beam_lateness_seconds(
        settings.window_seconds, settings.allowed_lateness_seconds
    )
    # offsets are committed one window after the allowed lateness: no on-time event remains
    keep_open = settings.allowed_lateness_seconds + settings.window_seconds
    Reference.from_lake(Lake(settings.lake))  # fails clearly if it is not loaded yet
    stored = (
        pipeline
        | "ReadTelemetry" >> ReadTelemetry(settings, partitions, **read_options)
        | "StoreTelemetry"
        >> beam.ParDo(StoreTelemetryFn(settings, keep_open_seconds=keep_open)).with_outputs(
            StoreTelemetryFn.PROGRESS, main="events"
        )
    )
    published = (
        stored.events
        | "SiteWindowStats"
        >> SiteWindowStats(settings.lake, settings.window_seconds, beam_lateness)
        | "PublishPanes" >> beam.ParDo(PublishPanesFn(settings))
        | "AfterPanes" >> beam.WindowInto(beam.window.GlobalWindows())
    )
    _ = (
        (stored[StoreTelemetryFn.PROGRESS], published)
        | "StoredAndPublished" >> beam.Flatten()
        | "CommitOffsets"
        >> beam.ParDo(CommitOffsetsFn(settings)).with_input_types(
            beam.typehints.KV[int, beam.typehints.Tuple[int, int, int]]
        )
    )


def run_stream(settings: Settings, drain_when_idle: float | None = None) -> dict[str, int]:
    """Run the job until SIGINT/SIGTERM (or, with ``drain_when_idle``, until the topic has been
    quiet that long and every window has fired); returns its counters."""
    ensure_topic(settings, settings.telemetry_topic)
    ensure_topic(settings, settings.stats_topic, compacted=True)
    partitions = partitions_of(settings, settings.telemetry_topic)
    pipeline = beam.Pipeline(options=pipeline_options(streaming=True))
    build_stream(pipeline, settings, partitions, drain_when_idle=drain_when_idle)
    stop, asked = threading.Event(), threading.Event()
    STOPPING.clear()

    def ask_to_stop(*_: object) -> None:
        asked.set()
        STOPPING.set()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, ask_to_stop)
    log.info("reading %s (%d partitions) from %s", settings.telemetry_topic, len(partitions),
             settings.kafka_bootstrap)  # fmt: skip
    result = pipeline.run()
    failure: list[BaseException] = []

    def wait() -> None:
        try:
            result.wait_until_finish()
        except BaseException as error:  # handed to the main thread
            failure.append(error)
        finally:
            stop.set()

    finished = threading.Thread(target=wait, daemon=True)
    finished.start()
    stop.wait()
    if not PipelineState.is_terminal(result.state):
        log.info("stopping: committed offsets stand; open windows are re-read at the next start")
        result.cancel()
    finished.join(timeout=30)
    if failure and not asked.is_set():  # a cancelled job reports itself as failed
        raise failure[0]
    totals = counters(result)
    return {name: totals.get(name, 0) for name in COUNTERS}
