"""The streaming job: the source (Kafka, NATS or Pub/Sub) -> validated, stored ->
SiteWindowStats -> gold and the stats topic; Kafka's offsets committed once the windows they fed
are final, NATS and Pub/Sub messages acknowledged once bronze holds them."""

from __future__ import annotations

import gc
import io
import logging
import signal
import sys
import threading
import time

import apache_beam as beam
import grpc
from apache_beam.runners.runner import PipelineResult, PipelineState

from betlake.core.config import BetlakeError, Settings
from betlake.core.kafka import end_offsets, ensure_topic, stream_consumer
from betlake.core.lake import Lake
from betlake.core.processes import give_back_free_memory, wait_in_main_thread
from betlake.core.reference import Reference
from betlake.core.transport import describe_source
from betlake.core.windowing import Windowing
from streaming.kafka_source import PROGRESS, SplitStoredReadFn
from streaming.metrics import PARTITION_METRICS
from streaming.reporting import close_reporters, reporter_for
from streaming.runners import counters, stream_options
from streaming.sinks import STOPPING, CommitOffsetsFn, PublishPanesFn
from streaming.sources import StreamSource, stream_source
from streaming.windows import SiteWindowStats

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
TRIM_EVERY_SECONDS = 30.0


def build_stream(
    pipeline: beam.Pipeline,
    settings: Settings,
    partitions: list[int],
    source: StreamSource | None = None,
    **read_options: object,
) -> None:
    """Add the streaming job's transforms to ``pipeline`` (reading ``source``, by default the
    configured one)."""
    Reference.from_lake(Lake.of(settings))  # fails clearly if it is not loaded yet
    source = source or stream_source(settings)
    stored = (
        pipeline
        | "ReadTelemetry" >> source.read(partitions, **read_options)
        | "SplitStoredReads"
        >> beam.ParDo(SplitStoredReadFn()).with_outputs(PROGRESS, main="figures")
    )
    # The panes are published in a stage of their own (Reshuffle: a fusion break, elided on
    # Prism), so a slow gold commit never holds up the windows' timers. PublishPanesFn emits
    # nothing: its output PCollection exists for its watermark, which stays behind every pane
    # not yet in gold and on the topic. Flattened with the progress of the reads, it holds the
    # commit timers back until what those offsets fed is published.
    panes_published = (
        stored.figures
        | "SiteWindowStats"
        >> SiteWindowStats(Lake.of(settings), Windowing.of(settings), batch=False)
        | "ApartFromTheTimers" >> beam.Reshuffle()
        | "PublishPanes" >> beam.ParDo(PublishPanesFn(settings))
        | "AfterPanes" >> beam.WindowInto(beam.window.GlobalWindows())
    )
    if not source.commits_after_panes:
        return  # acknowledged once stored
    _ = (
        (stored[PROGRESS], panes_published)
        | "HoldCommitsUntilPublished" >> beam.Flatten()
        | "CommitOffsets"
        >> beam.ParDo(CommitOffsetsFn(settings)).with_input_types(CommitOffsetsFn.INPUT)
    )


def run_stream(settings: Settings, drain_when_idle: float | None = None) -> dict[str, int]:
    """Run the job until SIGINT/SIGTERM (or, with ``drain_when_idle``, until the topic has been
    quiet that long, every partition is read to its end and every window has fired); returns
    its counters. A stop by signal cancels the pipeline first and the runner after it."""
    source = stream_source(settings)
    partitions = source.prepare()
    ensure_topic(settings, settings.stats_topic, compacted=True)
    stop, asked = threading.Event(), threading.Event()
    STOPPING.clear()

    def ask_to_stop(*_: object) -> None:
        asked.set()
        STOPPING.set()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, ask_to_stop)
    failure: list[BaseException] = []
    reporter_for(settings)  # tells Dagster what the job writes, from a thread of its own
    with stream_options(settings) as options:
        pipeline = beam.Pipeline(options=options)
        build_stream(pipeline, settings, partitions, source, drain_when_idle=drain_when_idle)
        log.info("reading %s (%d partitions)", describe_source(settings), len(partitions))
        result = pipeline.run()
        # What exists now (modules, Beam's and Arrow's set-up) lives as long as the job: the
        # cyclic collector need not walk it at each full collection (about 7 % of the job's CPU).
        gc.freeze()
        # A read's 20,000 messages and their fields are alive at once: at the default threshold
        # (700) each young collection walked them again. Over a 1M backlog, 4 runs alternating:
        # 77-84k -> 85-89k events/s to bronze, CPU 16.6-18.4 -> 15.6-16.0 s (README, stop 30).
        gc.set_threshold(50_000, 20, 20)
        threading.Thread(target=_trim_heap, args=(stop,), name="heap-trim", daemon=True).start()

        def wait() -> None:
            try:
                wait_until_finished(result)
            except BaseException as error:  # handed to the main thread
                failure.append(error)
            finally:
                stop.set()

        finished = threading.Thread(target=wait, daemon=True)
        finished.start()
        wait_in_main_thread(stop)  # not stop.wait(): a signal must reach its handler
        if not PipelineState.is_terminal(result.state):
            log.info(
                "stopping: what is acknowledged stands; open windows are %s at the next start",
                "re-read" if source.commits_after_panes else "rebuilt from bronze",
            )
            _quiet_shutdown()
            result.cancel()
        finished.join(timeout=5)
        if failure and not asked.is_set():  # a cancelled job reports itself as failed
            sys.stderr = sys.__stderr__  # its traceback is not a shutdown's complaint
            raise failure[0]
        totals, positions = counters(result), counters(result, PARTITION_METRICS)
        # The runner stops next, with the worker's channels to it still open: their threads'
        # complaints (a drained run's state stream, reset by the runner) are not errors.
        _quiet_shutdown()
    close_reporters()
    sys.stderr = sys.__stderr__
    if drain_when_idle is not None and not asked.is_set():
        source.check_drained(positions)
    return {name: totals.get(name, 0) for name in COUNTERS}


def _trim_heap(stop: threading.Event) -> None:
    """Give the heap's free pages back every :data:`TRIM_EVERY_SECONDS` while the job runs
    (see :func:`give_back_free_memory`): with it the 30-minute soak's RSS levels off once the
    event ledger is full, where it kept climbing before (README, stop 28)."""
    while not stop.wait(TRIM_EVERY_SECONDS):
        give_back_free_memory()


def wait_until_finished(result: PipelineResult) -> None:
    """Wait for the job to end, however long it runs: Beam's wait reads the job service's state
    stream, which ends after ``--job_server_timeout`` (a user's ``BETLAKE_PIPELINE_ARGS`` may
    set it short): gRPC's client ends it (DEADLINE_EXCEEDED), or Prism does when the deadline
    reaches its side first (CANCELLED). The job is still running then, so its state is polled
    instead."""
    try:
        result.wait_until_finish()
        return
    except grpc.RpcError as error:
        if error.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
            raise
    log.debug("the runner's state stream ended (--job_server_timeout): polling the job's state")
    while not PipelineState.is_terminal(state := result.state):
        time.sleep(1)
    if state != PipelineState.DONE:
        raise BetlakeError(f"the pipeline ended {state} (Prism's log lines above say why)")


class _DebugLog(io.TextIOBase):
    """A stand-in for stderr that writes to the debug log."""

    def write(self, text: str) -> int:
        if text.strip():
            log.debug("at shutdown: %s", text.rstrip())
        return len(text)


def _quiet_shutdown() -> None:
    """A stop is not an error: the runner's and the worker threads' complaints about a
    cancelled or finished pipeline (closed streams, failed bundles; Beam's worker prints the
    traceback of a failed bundle to stderr itself) go to the debug log until the job returns."""
    for name in ("betlake.prism", "apache_beam"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    sys.stderr = _DebugLog()

    def to_debug(hook: threading.ExceptHookArgs) -> None:
        log.debug("worker thread %s ended at shutdown: %r", hook.thread, hook.exc_value)

    threading.excepthook = to_debug


def check_drained(settings: Settings, starts: dict[int, int], metrics: dict[str, int]) -> None:
    """A drained run must have drained every partition, each read to the end offset it had
    when the topic went quiet: log it, or raise naming what was left unread."""
    undrained = [p for p in sorted(starts) if f"drained_end_{p}" not in metrics]
    if undrained:
        raise BetlakeError(f"the drained run ended without draining partitions {undrained}")
    unread = {}
    for partition, start in sorted(starts.items()):
        read_to = start + metrics.get(f"read_{partition}", 0)
        end = metrics[f"drained_end_{partition}"]
        if read_to != end:
            unread[partition] = end - read_to
    if unread:
        detail = ", ".join(f"partition {p}: {n}" for p, n in unread.items())
        log.error("drain incomplete: messages left unread (%s)", detail)
        raise BetlakeError(f"the drained run left messages unread ({detail})")
    consumer = stream_consumer(settings)
    try:
        ends = end_offsets(consumer, settings, list(starts))
    finally:
        consumer.close()
    drained = {p: metrics.get(f"drained_end_{p}", start) for p, start in starts.items()}
    arrived = sum(ends.values()) - sum(drained.values()) if ends else 0
    log.info("drained: every partition read to its end offset (%s)%s",
             ", ".join(f"{p}: {end}" for p, end in sorted(drained.items())),
             f"; {arrived} messages arrived after the drain began" if arrived else "")  # fmt: skip
