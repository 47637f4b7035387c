"""Benchmark: the streaming job's throughput and publish delay vs a naive per-event Beam job.

In one invocation, on a temporary lake and a Kafka broker it starts on a free 127.0.0.1 port
(and stops at the end), with the Prism runner warmed up first so no run pays its start:
  * backlog: N events spanning --hours of event time are produced before any job starts, then
    ``run_stream(settings, drain_when_idle=5)`` reads them: time until bronze holds every
    valid event, and until the last figure is published (with and without the drain's 5 s idle
    wait); then checks bronze (rows vs distinct ids) and gold (events counted vs bronze);
  * baseline: the same windowed aggregation written naively (one Beam element per event, a
    dict per Kafka message, FixedWindows(300) with the same trigger, CombinePerKey of counts
    and sums, panes published to a topic) over the same backlog, on the same runner;
  * peers (--peers): Bytewax, Quix Streams and a hand-written confluent-kafka loop, each in its
    own venv (benchmarks/peers), over the same backlog topic to its end offsets;
  * live: a producer process sends --rate events/s for --rate-seconds while the job runs, event
    time running --speedup times the wall clock, and each window's first ON_TIME publish is
    compared with the moment the producer sent the first event past its end + 30 s.
Prints the machine, N, events/s of both and their ratio, the publish delay and peak memory.

    .venv/bin/python -m benchmarks.stream_throughput [--events 1000000] [--hours 6]
        [--rate 10000] [--rate-seconds 60] [--speedup 60] [--peers bytewax,quix,handwritten]
        [--keep] [--profile]

With ``--reporting-runs N`` it only reads the backlog 2N times, reporting to a Dagster instance
(``BETLAKE_DAGSTER_REPORTING=on``) and not, alternately, and prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing
import os
import resource
import shutil
import signal
import statistics
import tempfile
import threading
import time
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

import apache_beam as beam
import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms import trigger, window
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, Timestamp
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.progress import track

from benchmarks.common import PROJECT, REFERENCE, machine
from benchmarks.peers import PEERS, run_peer
from benchmarks.profile import Profile
from betlake.core.config import Settings
from betlake.core.contract import TELEMETRY_RAW, RawBatch, validate
from betlake.core.kafka import (
    STREAM_GROUP,
    KafkaError,
    client_config,
    committed_offsets,
    ensure_topic,
    keep_pace,
    partitions_of,
    producer,
)
from betlake.core.lake import Lake
from betlake.core.processes import restore_default_signals
from betlake.core.reference import REFERENCE_TABLES, read_reference_csv
from betlake.core.windowing import epoch_us
from betlake.local import broker
from betlake.local.generate import TelemetrySpec, generate_telemetry
from streaming.job import run_stream
from streaming.runners import pipeline_options
from tests.kafka_topics import read_topic

DRAIN_IDLE = 5  # seconds: run_stream(drain_when_idle=...)


# ------------------------------------------------------------------------- producing


def checked_messages(spec: TelemetrySpec, window_seconds: int) -> tuple[list, np.ndarray, int]:
    """Generated messages, each one's event time as the contract reads it (-1 if it rejects the
    message) and how many distinct valid events they hold: what bronze must end up with."""
    messages = list(generate_telemetry(spec, REFERENCE))
    times = np.full(len(messages), -1, dtype=np.int64)
    ids = []
    now = datetime.now(UTC)
    for first in range(0, len(messages), 50_000):
        chunk = [line for _, line in messages[first : first + 50_000]]
        events = validate(
            RawBatch(chunk, "kafka", now, [""] * len(chunk), [0] * len(chunk),
                     list(range(first, first + len(chunk)))),
            window_seconds=window_seconds, max_clock_skew_seconds=300,
        ).events  # fmt: skip
        where = events.column("kafka_offset").to_numpy()
        times[where] = pc.cast(events.column("event_time"), pa.int64()).to_numpy()
        ids.append(events.column("event_id"))
    return messages, times, pc.count_distinct(pa.chunked_array(ids)).as_py()


def write_span(spec: TelemetrySpec, window_seconds: int, path: Path) -> Path:
    """One span of telemetry generated and checked (:func:`checked_messages`), as an Arrow file:
    each message's key, value and event time (-1: rejected), and the span's distinct valid
    events in the schema's metadata."""
    messages, times, valid = checked_messages(spec, window_seconds)
    keys, lines = zip(*messages, strict=True) if messages else ((), ())
    table = pa.table(
        {
            "key": pa.array([key.encode() for key in keys], pa.binary()),
            "value": pa.array([line.encode() for line in lines], pa.binary()),
            "event_us": times,
        }
    ).replace_schema_metadata({"valid": str(valid)})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def write_spans(specs: list[TelemetrySpec], window_seconds: int, directory: Path) -> list[Path]:
    """Every span written (:func:`write_span`) before anything is sent, one process a core: a
    producer that generated while it sent would take CPU from the job it measures."""
    directory.mkdir(parents=True, exist_ok=True)
    jobs = [(spec, window_seconds, directory / f"span-{i:04d}.arrow") for i, spec in
            enumerate(specs)]  # fmt: skip
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(len(jobs), os.cpu_count() or 1)) as pool:
        return list(track(pool.imap(_write_span, jobs), "generating telemetry", len(jobs)))


def _write_span(job: tuple[TelemetrySpec, int, Path]) -> Path:
    return write_span(*job)


def produce_telemetry(
    conn,
    bootstrap: str,
    topic: str,
    spans: list[Path],
    rate: float | None,
    window_seconds: int,
    bound_seconds: int,
) -> None:
    """Send written spans (:func:`write_spans`, consecutive spans of event time), at most
    ``rate`` messages/s on one clock; runs in its own process.

    Sends ``("sending", {"valid": events})`` on ``conn`` when the first message goes out (the
    valid events of the first span), then ``("done", figures)``: the messages sent, the valid
    events, the send interval, and per window start (epoch us) the wall time the first valid
    message with an event time >= window end + ``bound_seconds`` was handed to the producer,
    the earliest moment the job's watermark could pass that window's end.
    """
    out = producer(Settings(kafka_bootstrap=bootstrap))
    window_us, bound_us = window_seconds * 1_000_000, bound_seconds * 1_000_000
    first_sent: dict[int, float] = {}
    sent = valid = 0
    first_us = last_us = next_window = next_threshold = None
    for path in spans:
        table = pa.ipc.open_file(str(path)).read_all()
        span_valid = int(table.schema.metadata[b"valid"])
        times = table.column("event_us").to_numpy()
        valid_times = times[times >= 0]
        if first_us is None:
            first_us = int(valid_times.min())
            next_window = first_us // window_us * window_us
            next_threshold = next_window + window_us + bound_us
            conn.send(("sending", {"valid": span_valid}))
            began, began_wall = time.monotonic(), time.time()
        last_us = int(valid_times.max())
        valid += span_valid
        keys, values = table.column("key").to_pylist(), table.column("value").to_pylist()
        for key, value, us in zip(keys, values, times.tolist(), strict=True):
            while True:
                try:
                    out.produce(topic, value=value, key=key)
                    break
                except BufferError:
                    out.poll(0.05)
            sent += 1
            if us >= next_threshold:
                now = time.time()
                while us >= next_threshold:
                    first_sent[next_window] = now
                    next_window += window_us
                    next_threshold += window_us
            if sent % 100 == 0:
                out.poll(0)
                keep_pace(sent, rate, began)
    if out.flush(120):
        raise RuntimeError(f"{len(out)} messages were not delivered to {topic}")
    conn.send(("done", {
        "messages": sent, "valid": valid, "began": began_wall, "ended": time.time(),
        "first_sent": first_sent, "first_us": first_us, "last_us": last_us,
    }))  # fmt: skip


class Spawned:
    """A function run in a spawned process of its own, reporting ``(what, figures)`` pairs on
    the pipe it gets as first argument."""

    def __init__(self, target, *args: object) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=target, args=(child, *args))
        self.process.start()

    def wait(self, what: str, timeout: float = 900):
        if not self.conn.poll(timeout):
            raise RuntimeError(f"the {self.process.name} process did not report {what!r}")
        said, figures = self.conn.recv()
        if said != what:
            raise RuntimeError(f"the {self.process.name} process said {said!r}, not {what!r}")
        return figures

    def stop(self) -> None:
        """Let the process end (or end it), and wait for it."""
        with contextlib.suppress(OSError):
            self.conn.send("exit")
        self.process.join(5)
        for end in (self.process.terminate, self.process.kill):
            if self.process.is_alive():
                end()
                self.process.join(10)


def producer_process(*args: object) -> Spawned:
    """:func:`produce_telemetry` in a spawned process."""
    return Spawned(produce_telemetry, *args)


def stream_in_child(conn, settings: Settings) -> None:
    """The streaming job in a process of its own, as ``betlake stream`` runs: says when it
    starts (imports done), then its counters, its peak RSS (MiB, from the kernel) and the peak
    of what Arrow's memory pool held."""
    conn.send(("started", time.time()))
    counters = stream(settings)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    conn.send(("done", (counters, peak_rss, pa.default_memory_pool().max_memory() / 2**20)))
    conn.poll(60)  # alive until the parent has read its CPU seconds (Spawned.stop)


def first_on_time(
    messages: list[tuple[str, dict | None, float]], fired: bool = False
) -> dict[int, float]:
    """Per window start (epoch us), when its first ON_TIME figure was published (with
    ``fired``: when it fired, its ``computed_at``)."""
    first: dict[int, float] = {}
    for _, value, published in messages:
        if value is not None and value["pane"] == "ON_TIME":
            start = epoch_us(datetime.fromisoformat(value["window_start"]))
            at = datetime.fromisoformat(value["computed_at"]).timestamp() if fired else published
            first[start] = min(first.get(start, at), at)
    return first


# ------------------------------------------------------------------------- measuring


class BronzeCounter(threading.Thread):
    """Polls telemetry_raw's row count (Delta log statistics) until it reaches ``expected``."""

    def __init__(self, lake: Lake, expected: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.lake, self.expected, self.interval = lake, expected, interval
        self.stop = threading.Event()
        self.first_rows: float | None = None
        self.complete: float | None = None
        self.rows = 0

    def count(self) -> int:
        with self.lake.held(TELEMETRY_RAW.name) as table:
            if table is None:
                return 0
            actions = pa.table(table.get_add_actions(flatten=True))
        return int(pc.sum(actions.column("num_records")).as_py() or 0) if len(actions) else 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.rows = self.count()
            now = time.time()
            if self.rows and self.first_rows is None:
                self.first_rows = now
            if self.rows >= self.expected:
                self.complete = now
                return
            self.stop.wait(self.interval)


def rss_mib(pid: int | str) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    line = next((x for x in status.splitlines() if x.startswith("VmRSS:")), "VmRSS: 0 kB")
    return int(line.split()[1]) / 1024


def prism_pids(parent: int) -> list[int]:
    """The child processes of ``parent`` running the Prism runner."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(stat_fields(entry.name)[1])
            argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and Path(argv0.decode(errors="replace")).name.startswith("prism"):
            found.append(int(entry.name))
    return found


def stat_fields(pid: int | str) -> list[str]:
    """A process's ``/proc/<pid>/stat`` fields after its name (state first); raises OSError
    once it is gone."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU seconds a process has used so far (0 once it is gone)."""
    try:
        fields = stat_fields(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class MemorySampler(threading.Thread):
    """Peak RSS of a job's process (this one by default: the naive job's loopback worker runs
    here) and of its Prism runner, sampled; and the CPU seconds both used meanwhile (a measure
    the other load of a shared machine barely moves, unlike the wall clock)."""

    def __init__(self, pid: int | None = None, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid or os.getpid(), interval
        self.stop = threading.Event()
        self.python = self.prism = self.total = 0.0
        self.prism_cpu: dict[int, float] = {}

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            python = rss_mib(self.pid)
            pids = prism_pids(self.pid)
            prism = sum(rss_mib(pid) for pid in pids)
            self.python, self.prism = max(self.python, python), max(self.prism, prism)
            self.total = max(self.total, python + prism)
            for pid in pids:
                self.prism_cpu[pid] = max(self.prism_cpu.get(pid, 0.0), cpu_seconds(pid))

    def __enter__(self) -> MemorySampler:
        self.cpu_began = cpu_seconds(self.pid)
        self.prism_before = {pid: cpu_seconds(pid) for pid in prism_pids(self.pid)}
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.join()
        self.python_cpu = cpu_seconds(self.pid) - self.cpu_began
        self.prism_cpu_used = sum(
            used - self.prism_before.get(pid, 0.0) for pid, used in self.prism_cpu.items()
        )
        self.cpu_total = self.python_cpu + self.prism_cpu_used

    def line(self) -> str:
        return (f"python {self.python:,.0f} MiB + prism {self.prism:,.0f} MiB, "
                f"together {self.total:,.0f} MiB")  # fmt: skip

    def cpu(self, events: int) -> str:
        """CPU used per event, of the job (this process) and its Prism."""
        total = self.cpu_total
        return (f"CPU {total:.1f}s = {total / events * 1e6:.1f} us/event (python "
                f"{self.python_cpu:.1f}s + prism {self.prism_cpu_used:.1f}s)")  # fmt: skip


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))]


# ------------------------------------------------------------------------- naive baseline


_WATERMARK = beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())


class _NoSplitTracker(OffsetRestrictionTracker):
    """Checkpoints but never splits: one reader per partition, in offset order."""

    def try_split(self, fraction_of_remainder: float):
        return super().try_split(0) if fraction_of_remainder == 0 else None


class NaiveReadFn(beam.DoFn, RestrictionProvider):
    """Partition -> one element per Kafka message (its JSON as a dict, at its event time), for
    the backlog's offsets; the watermark is the partition's max event time minus the bound."""

    def __init__(self, settings: Settings, topic: str, ends: dict[int, int]) -> None:
        self.settings, self.topic, self.ends = settings, topic, ends
        self.bound_us = settings.max_out_of_orderness_seconds * 1_000_000

    def initial_restriction(self, partition: int) -> OffsetRange:
        return OffsetRange(0, self.ends[partition])

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return _NoSplitTracker(restriction)

    def split(self, partition: int, restriction: OffsetRange):
        yield restriction

    def restriction_size(self, partition: int, restriction: OffsetRange) -> int:
        return 1

    def setup(self) -> None:
        self.consumers: dict[int, tuple[object, int]] = {}
        self.latest: dict[int, int] = {}
        self.future_us = epoch_us(datetime.now(UTC)) + 300 * 1_000_000

    def teardown(self) -> None:
        for consumer, _ in self.consumers.values():
            consumer.close()

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        partition: int,
        tracker=beam.DoFn.RestrictionParam(),
        estimator=_WATERMARK,
    ):
        # imported here: cloudpickle would try to pickle the Kafka classes with this DoFn
        from confluent_kafka import Consumer, TopicPartition

        start = tracker.current_restriction().start
        consumer, position = self.consumers.get(partition, (None, -1))
        if consumer is None:
            consumer = Consumer(client_config(
                self.settings, **{"group.id": f"bench-naive-{time.time_ns()}",
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                  "fetch.wait.max.ms": 100}))  # fmt: skip
        if position != start:
            consumer.assign([TopicPartition(self.topic, partition, start)])
        self.consumers[partition] = (consumer, start)
        for message in consumer.consume(20_000, 0.2):
            if message.error():
                continue
            if not tracker.try_claim(message.offset()):
                return
            self.consumers[partition] = (consumer, message.offset() + 1)
            try:
                event = json.loads(message.value())
                value = event["event_time"]
                us = value * 1000 if isinstance(value, int) else epoch_us(
                    datetime.fromisoformat(value))  # fmt: skip
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if us > self.future_us or not isinstance(event.get("site_id"), str):
                continue
            self.latest[partition] = max(self.latest.get(partition, us), us)
            yield window.TimestampedValue(event, Timestamp(micros=us))
        if self.consumers[partition][1] >= self.ends[partition]:
            return  # every offset of the backlog claimed: the partition is done
        if partition in self.latest:
            mark = Timestamp(micros=self.latest[partition] - self.bound_us)
            if estimator.current_watermark() is None or mark > estimator.current_watermark():
                estimator.set_watermark(mark)
        tracker.defer_remainder(Duration(seconds=0))


def one_event(event: dict) -> tuple[str, tuple[int, int, int, float, float]]:
    """An event -> (site_id, (events, sessions, bets, stake, payout)) for one event."""
    kind = event.get("event_type")

    def amount() -> float:
        try:
            return float(event.get("amount") or 0)
        except (TypeError, ValueError):
            return 0.0

    return event["site_id"], (
        1,
        int(kind == "session_start"),
        int(kind == "bet_placed"),
        amount() if kind == "bet_placed" else 0.0,
        amount() if kind == "bet_settled" else 0.0,
    )


class SumFiguresFn(beam.CombineFn):
    """Counts and sums, field by field."""

    def create_accumulator(self):
        return (0, 0, 0, 0.0, 0.0)

    def add_input(self, accumulator, element):
        return tuple(a + b for a, b in zip(accumulator, element, strict=True))

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            merged = self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator


class PublishNaiveFn(beam.DoFn):
    """Fired panes -> JSON messages on a topic, a bundle at a time."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings, self.topic = settings, topic

    def setup(self) -> None:
        self.producer = producer(self.settings)

    def process(self, element, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        site_id, (events, sessions, bets, stake, payout) = element
        start = win.start.to_utc_datetime(has_tz=True).strftime("%Y-%m-%dT%H:%M:%SZ")
        value = {"window_start": start, "site_id": site_id, "events": events,
                 "sessions": sessions, "bets": bets, "stake": round(stake, 2),
                 "payout": round(payout, 2), "pane": ("EARLY", "ON_TIME", "LATE", "UNKNOWN")[
                     pane.timing]}  # fmt: skip
        self.producer.produce(self.topic, key=f"{site_id}|{start}", value=json.dumps(value))

    def finish_bundle(self) -> None:
        self.producer.flush(30)


def run_naive(settings: Settings, topic: str, stats_topic: str) -> None:
    """The naive job over the current contents of ``topic``, until every window has fired."""
    consumer = Consumer(client_config(settings, **{"group.id": "bench-offsets"}))
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
        for p in partitions_of(settings, topic)
    }
    consumer.close()
    lateness = settings.allowed_lateness_seconds
    pipeline = beam.Pipeline(options=pipeline_options(settings, streaming=True))
    _ = (
        pipeline
        | "Partitions" >> beam.Create(sorted(ends))
        | "ReadEvents" >> beam.ParDo(NaiveReadFn(settings, topic, ends))
        | "OneEvent" >> beam.Map(one_event)
        | "Windows"
        >> beam.WindowInto(
            window.FixedWindows(settings.window_seconds),
            trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.DISCARDING,
            allowed_lateness=Duration(seconds=lateness),
        )
        | "SumPerSite" >> beam.CombinePerKey(SumFiguresFn())
        | "Publish" >> beam.ParDo(PublishNaiveFn(settings, stats_topic))
    )
    pipeline.run().wait_until_finish()


# ------------------------------------------------------------------------- phases


def lake_settings(root: Path, bootstrap: str, prefix: str, **env: str) -> Settings:
    """Settings (``env`` added) for a fresh lake under ``root`` with the sample reference
    loaded; reporting to Dagster off unless ``env`` turns it on; this process's BETLAKE_CACHE
    (where Prism and Kafka are)."""
    settings = Settings.from_env({
        "BETLAKE_LAKE": str(root), "BETLAKE_REFERENCE": str(REFERENCE),
        "BETLAKE_KAFKA_BOOTSTRAP": bootstrap, "BETLAKE_TELEMETRY_TOPIC": f"{prefix}-telemetry",
        "BETLAKE_STATS_TOPIC": f"{prefix}-stats", "BETLAKE_DAGSTER_REPORTING": "off",
        "BETLAKE_CACHE": os.environ.get("BETLAKE_CACHE", ""), **env,
    })  # fmt: skip
    lake = Lake.of(settings)
    for spec in REFERENCE_TABLES:
        lake.overwrite(spec, read_reference_csv(spec, settings.reference, datetime.now(UTC)))
    ensure_topic(settings, settings.telemetry_topic)
    return settings


def wait_for_group_coordinator(settings: Settings, timeout: float = 90) -> float:
    """Wait until the stream group's offsets can be read: on a new broker the group coordinator
    may answer NOT_COORDINATOR for a while, which ``committed_offsets`` does not retry."""
    began = time.monotonic()
    partitions = partitions_of(settings, settings.telemetry_topic)
    while True:
        try:
            committed_offsets(settings, settings.telemetry_topic, partitions)
            return time.monotonic() - began
        except KafkaError:
            if time.monotonic() - began > timeout:
                raise
            time.sleep(1)


def stream(settings: Settings) -> dict[str, int]:
    """run_stream, with the signal handlers it installs put back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run_stream(settings, drain_when_idle=DRAIN_IDLE)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def warm_up_prism(settings: Settings) -> float:
    """Start the Prism runner (a singleton kept for every later run) with a trivial job."""
    began = time.perf_counter()
    pipeline = beam.Pipeline(options=pipeline_options(settings, streaming=True))
    _ = pipeline | beam.Create([1, 2, 3]) | beam.Map(lambda x: x + 1)
    pipeline.run().wait_until_finish()
    return time.perf_counter() - began


def compare_reporting(work: Path, bootstrap: str, valid: int, runs: int) -> None:
    """The backlog read ``runs`` times with the stream reporting to a Dagster instance and as
    many times without (alternating, after an unmeasured warm-up run, a fresh lake each time,
    the stream group deleted so it reads from offset 0): median events/s to bronze complete
    and to the last publish, and their ratio on/off."""
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home)
    with dg.DagsterInstance.from_config(str(home)):
        pass  # the instance's SQLite storage exists before the first run, as an operator's does
    rates: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    modes = [("warm-up", "off")] + [
        (f"run {run + 1}", mode)
        for run in range(runs)
        for mode in (("on", "off") if run % 2 == 0 else ("off", "on"))
    ]
    for number, (label, mode) in enumerate(modes):
        settings = lake_settings(
            work / f"lake-{number}", bootstrap, "backlog",
            BETLAKE_DAGSTER_REPORTING=mode, DAGSTER_HOME=str(home),
        )  # fmt: skip
        admin = AdminClient(client_config(settings))  # the stream starts from offset 0
        for done in admin.delete_consumer_groups([STREAM_GROUP]).values():
            with contextlib.suppress(KafkaException):  # none yet: nothing to delete
                done.result(30)
        bronze = BronzeCounter(Lake(settings.lake), valid)
        began = time.time()
        bronze.start()
        counters = stream(settings)
        bronze.stop.set()
        bronze.join()
        last = max(ts for _, _, ts in read_topic(settings, settings.stats_topic))
        to_bronze, to_publish = (bronze.complete or time.time()) - began, last - began
        if label != "warm-up":
            rates[mode].append((valid / to_bronze, valid / to_publish))
        print(f"  {label} reporting {mode:3}: bronze complete {to_bronze:6.2f}s, "
              f"last publish {to_publish:6.2f}s, {counters['published']:,} rows "
              "published")  # fmt: skip
    with dg.DagsterInstance.from_config(str(home)) as instance:
        reported = instance.fetch_materializations(dg.AssetKey("site_window_stats"), limit=10_000)
        print(f"the instance holds {len(reported.records):,} runless materializations")
    print(f"reporting to Dagster on/off over {runs} runs each of {valid:,} events (medians):")
    for i, what in enumerate(("Kafka -> bronze complete", "Kafka -> last publish")):
        on = statistics.median(r[i] for r in rates["on"])
        off = statistics.median(r[i] for r in rates["off"])
        print(f"  {what:25} on {on:9,.0f} events/s, off {off:9,.0f} events/s, "
              f"ratio on/off {on / off:.3f} ({(1 - on / off) * 100:+.1f}% cost)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--hours", type=float, default=6, help="event time the backlog spans")
    parser.add_argument("--rate", type=float, default=10_000, help="live phase events/s")
    parser.add_argument("--rate-seconds", type=float, default=60, help="live phase duration")
    parser.add_argument("--speedup", type=float, default=60, help="live event time per second")
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="peers to run over the backlog, comma-separated ('' for none)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--profile", action="store_true", help="py-spy the job over the backlog")
    parser.add_argument(
        "--reporting-runs", type=int, metavar="N",
        help="only compare the backlog's throughput with reporting to Dagster on and off, "
        "N runs each (medians); no naive or live phase",
    )  # fmt: skip
    args = parser.parse_args()
    restore_default_signals()  # Ctrl-C stops it even when started where SIGINT is ignored
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C: its broker stops too
    peers = [name for name in args.peers.split(",") if name]
    if unknown := set(peers) - set(PEERS):
        parser.error(f"unknown peers {', '.join(sorted(unknown))}: choose from {', '.join(PEERS)}")

    work = Path(tempfile.mkdtemp(prefix="betlake-stream-bench-"))
    bootstrap = f"127.0.0.1:{broker.free_port_pair()}"
    producers: list[Spawned] = []
    print(f"machine: {machine()}")
    broker_pid = broker.start(bootstrap, home=work / "kafka", timeout=180)
    try:
        settings = lake_settings(work / "lake", bootstrap, "backlog")
        print(f"Kafka broker {broker.KAFKA_VERSION} pid {broker_pid} on {bootstrap} "
              f"(its JVM is not in the memory figures); Prism warm-up "
              f"{warm_up_prism(settings):.1f}s (the naive job's Prism; betlake's job starts "
              "its own)")  # fmt: skip
        waited = wait_for_group_coordinator(settings)
        if waited > 1:
            print(f"(waited {waited:.0f}s for the new broker's group coordinator)")
        window_s = settings.window_seconds
        bound = settings.max_out_of_orderness_seconds
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        span = args.hours * 3600
        start = now - timedelta(seconds=span + 3600)

        # 1. the backlog
        spec = TelemetrySpec(args.events, start, timedelta(seconds=span), seed=11)
        generating = time.monotonic()
        spans = write_spans([spec], window_s, work / "backlog")
        generated_s = time.monotonic() - generating
        producers.append(producer_process(bootstrap, settings.telemetry_topic, spans, None,
                                         window_s, bound))  # fmt: skip
        producers[-1].wait("sending")
        sent = producers[-1].wait("done")
        n = sent["valid"]
        produced_s = sent["ended"] - sent["began"]
        window_us = window_s * 1_000_000
        windows = sent["last_us"] // window_us - sent["first_us"] // window_us + 1
        print(f"backlog: {n:,} valid events (asked {args.events:,}; {sent['messages']:,} "
              f"messages with duplicates and malformed ones) over "
              f"{(sent['last_us'] - sent['first_us']) / 3.6e9:.1f} h of event time ({windows} "
              f"windows), generated and checked in {generated_s:.1f}s, then produced in "
              f"{produced_s:.1f}s ({sent['messages'] / produced_s:,.0f} msg/s) before any job "
              f"started")  # fmt: skip

        if args.reporting_runs:
            compare_reporting(work, bootstrap, n, args.reporting_runs)
            return

        # 2. betlake over the backlog
        bronze = BronzeCounter(Lake.of(settings), n)
        job = Spawned(stream_in_child, settings)
        job_start = job.wait("started", timeout=120)
        pid = job.process.pid
        profile = Profile(work / "betlake.pyspy", pid) if args.profile else nullcontext()
        with MemorySampler(pid) as betlake_memory, profile:
            bronze.start()
            counters, job_maxrss, job_arrow = job.wait("done")
            job_end = time.time()
        job.stop()
        if args.profile:
            profiled = profile.top(10)
        bronze.stop.set()
        bronze.join()
        published = read_topic(settings, settings.stats_topic)
        last_publish = max(ts for _, _, ts in published)
        bronze_s = (bronze.complete or job_end) - job_start
        # the drain waits DRAIN_IDLE s after the last message read; the naive job needs no such
        # wait (it ends at the backlog's last offset), but the wait may overlap with bronze
        # writes still in progress: so a range, from "all of it" to "none of it"
        e2e_s = last_publish - job_start
        e2e_low_s = max(bronze_s, e2e_s - DRAIN_IDLE)
        on_time = first_on_time(published)
        queued = [on_time[w] - sent["first_sent"][w] for w in on_time if w in sent["first_sent"]]
        con = Lake.of(settings).connect()
        rows, distinct, on_time_rows = con.execute(
            "SELECT count(*), count(DISTINCT event_id), count(*) FILTER (WHERE NOT arrived_late)"
            " FROM telemetry_raw"
        ).fetchone()
        gold_events = con.execute("SELECT sum(events) FROM site_window_stats").fetchone()[0]

        # 4. the naive baseline over the same backlog
        naive_topic = "naive-stats"
        ensure_topic(settings, naive_topic)
        with MemorySampler() as naive_memory:
            naive_start = time.time()
            run_naive(settings, settings.telemetry_topic, naive_topic)
            naive_end = time.time()
        naive_published = read_topic(settings, naive_topic)
        naive_last = max(ts for _, _, ts in naive_published)
        naive_s = naive_last - naive_start
        naive_events = sum(v["events"] for _, v, _ in naive_published)
        naive_windows = len(first_on_time(naive_published))

        # 5. the peers over the same backlog
        peer_figures = {name: run_peer(name, settings) for name in peers}

        # 3. live, rate-limited
        live = lake_settings(work / "lake-live", bootstrap, "live")
        live_span = args.rate_seconds * args.speedup
        live_start = now - timedelta(seconds=live_span + 3600)
        live_spec = TelemetrySpec(
            int(args.rate * args.rate_seconds), live_start, timedelta(seconds=live_span), seed=12
        )
        live_spans = write_spans([live_spec], window_s, work / "live")
        producers.append(producer_process(bootstrap, live.telemetry_topic, live_spans, args.rate,
                                         window_s, bound))  # fmt: skip
        live_valid = producers[-1].wait("sending")["valid"]
        time.sleep(1)  # a first second of events is there when the job's readers start
        live_job = Spawned(stream_in_child, live)
        live_job_start = live_job.wait("started", timeout=120)
        with MemorySampler(live_job.process.pid) as live_memory:
            live_bronze = BronzeCounter(Lake.of(live), live_valid)
            live_bronze.start()
            live_counters, live_maxrss, live_arrow = live_job.wait("done")
        live_job.stop()
        live_sent = producers[-1].wait("done")
        live_bronze.stop.set()
        live_bronze.join()
        live_published = first_on_time(read_topic(live, live.stats_topic))
        reading = live_bronze.first_rows or live_job_start
        delays = [
            live_published[w] - at
            for w, at in live_sent["first_sent"].items()
            if w in live_published and at >= reading
        ]
        skipped = sum(1 for at in live_sent["first_sent"].values() if at < reading)
        live_rate = live_sent["messages"] / (live_sent["ended"] - live_sent["began"])
        live_lag = (
            f"bronze complete {live_bronze.complete - live_sent['ended']:.2f}s after the last send"
            if live_bronze.complete
            else f"bronze INCOMPLETE: {live_bronze.rows:,} of {live_valid:,} valid events"
        )
        closes = sorted(live_sent["first_sent"].values())
        gaps = [b - a for a, b in itertools.pairwise(closes)]
        cadence = statistics.median(gaps) if gaps else float("nan")
    finally:
        for process in producers:
            process.stop()
        broker.stop(home=work / "kafka")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nN = {n:,} events")
    if args.profile:
        print(
            f"profile of the job over the backlog (py-spy, the thread holding the GIL):\n{profiled}"
        )
    print(f"betlake stream   counters {counters}")
    print(f"  read {counters.get('messages_in', 0):,} of {sent['messages']:,} messages; bronze "
          f"{rows:,} rows, {distinct:,} distinct event ids; gold counts {gold_events:,} of the "
          f"{on_time_rows:,} on-time bronze events; {len(on_time)}/{windows} windows published "
          f"ON_TIME")  # fmt: skip
    done = n if bronze.complete else distinct  # events/s count the events that made it
    if not bronze.complete:
        print(f"  INCOMPLETE: the job ended with {distinct:,} of the {n:,} valid events in bronze;"
              f" the figures below count those only")  # fmt: skip
    print(f"  Kafka -> bronze complete     {bronze_s:7.2f}s  {done / bronze_s:9,.0f} "
          f"events/s")  # fmt: skip
    print(f"  Kafka -> bronze, gold, topic {e2e_s:7.2f}s  {done / e2e_s:9,.0f} events/s"
          f"  (last publish, counting the drain's whole {DRAIN_IDLE}s idle wait; without it "
          f"{e2e_low_s:.2f}s, {done / e2e_low_s:,.0f} events/s; run_stream returned "
          f"after {job_end - job_start:.2f}s)")  # fmt: skip
    print(
        f"  first ON_TIME publish {min(on_time.values()) - job_start:.2f}s after job start; "
        f"backlog 'delay' (publish - send of the event closing the window) median "
        f"{statistics.median(queued):.1f}s: queueing in the backlog, not latency"
    )
    print(
        f"naive per-event  {naive_s:7.2f}s  {n / naive_s:9,.0f} events/s  (last "
        f"publish; the job returned after {naive_end - naive_start:.2f}s; {naive_events:,} "
        f"of {sent['messages']:,} messages counted in panes, {naive_windows}/{windows} windows "
        f"ON_TIME; no validation, dedup, bronze, gold, FX, distinct players)"
    )
    naive_rate = n / naive_s
    cpu_ratio = naive_memory.cpu_total / betlake_memory.cpu_total
    print(f"CPU: betlake {betlake_memory.cpu(n)}; naive {naive_memory.cpu(n)}; naive/betlake "
          f"CPU per event {cpu_ratio:.2f}x")  # fmt: skip
    print(f"ratio betlake/naive events/s: {done / e2e_s / naive_rate:.2f}x to "
          f"{done / e2e_low_s / naive_rate:.2f}x end to end ({done / bronze_s / naive_rate:.2f}x "
          f"betlake to bronze complete)")  # fmt: skip
    for name, peer in peer_figures.items():
        rate, target = peer["events_per_s"], PEERS[name].target
        print(
            f"peer {name:<11} {peer['seconds']:7.2f}s  {rate:9,.0f} events/s  (its distinct "
            f"valid events / first read to last window or backlog end; read "
            f"{peer['messages']:,} messages, dropped {peer['malformed']:,} malformed, "
            f"{peer['duplicates']:,} duplicates and {peer['late']:,} late events (betlake "
            f"keeps late ones in bronze), {peer['valid']:,} distinct valid; "
            f"{peer['in_windows']:,} events in {peer['windows']:,} (window, site) figures "
            f"emitted); betlake/{name} {done / e2e_s / rate:.2f}x to "
            f"{done / e2e_low_s / rate:.2f}x" + (f" (target >= {target:g}x)" if target else "")
        )
    print(f"live: {live_sent['messages']:,} messages at {live_rate:,.0f} msg/s "
          f"(asked {args.rate:,.0f}) for {args.rate_seconds:g}s, event time ~x{args.speedup:g} "
          f"(a window closed every {cadence:.1f}s); counters {live_counters}; "
          f"{live_lag}")  # fmt: skip
    if delays:
        print(f"  publish delay over {len(delays)} windows ({skipped} closed before the job read "
              f"its first batch, left out): median {statistics.median(delays):.2f}s, "
              f"p95 {percentile(delays, 0.95):.2f}s, max {max(delays):.2f}s")  # fmt: skip
    else:
        print("  publish delay: no window closed while the job was reading")
    print(
        "  delay = broker timestamp of the window's first ON_TIME stats message - wall time the"
        " producer handed Kafka the first event >= window end + 30 s; it includes producer"
        " linger (20 ms), the job's poll (<= 0.2 s), validation, the bronze Delta commit,"
        " Prism's watermark and timer handling, the gold Delta merge and the publish flush;"
        " the producer shares the 2 CPUs with the job"
    )
    print(
        f"peak RSS sampled every 0.25 s (betlake: its job process, as `betlake stream` runs, and "
        f"its Prism; naive: this process, where its loopback worker runs, and its Prism): "
        f"betlake {betlake_memory.line()}; naive {naive_memory.line()}; live "
        f"{live_memory.line()}; the job process's own peak (getrusage) {job_maxrss:,.0f} MiB "
        f"over the backlog (Arrow's pool at most {job_arrow:,.0f} MiB of it), "
        f"{live_maxrss:,.0f} MiB live (Arrow {live_arrow:,.0f} MiB)"
    )


if __name__ == "__main__":
    main()
