"""Soak: the streaming job at a steady rate for a long time; its memory and publish delay.

On a Kafka broker it starts on a free 127.0.0.1 port and a temporary lake, a producer process
sends --rate events/s for --minutes (generated beforehand, a file a minute, so the producer
takes little CPU from the job; event time runs --speedup times the wall clock, so a window
closes every 300/speedup s), while ``betlake stream`` runs as its own process. Every 5 s the RSS
and CPU seconds of the job and its Prism runner, and the CPU time the host's hypervisor took
(steal: a shared machine's noise), are sampled; at the end each window's publish
delay (its first ON_TIME figure on the stats topic minus the moment the producer sent the first
event that let the watermark pass the window's end) is computed. Prints the series per minute
(and the CPU cores used, the steadier figure on a shared machine), checks them against the
targets (RSS within +-10 % of its mean after the first 5 minutes, publish delay p95 <= 2 s in
every minute) and draws them as a PNG; then checks gold against the truth recomputed from
bronze, to the cent, and each window's first ON_TIME figure against the truth's event count.
When they agree, the job's log is kept beside the plot (``soak.job.log``), the rest deleted.

    .venv/bin/python -m benchmarks.soak [--rate 10000] [--minutes 30] [--speedup 60]
        [--out reports/soak.png]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.common import machine
from benchmarks.stream_throughput import (
    cpu_seconds,
    first_on_time,
    lake_settings,
    percentile,
    producer_process,
    rss_mib,
    wait_for_group_coordinator,
    write_spans,
)
from betlake.core.config import Settings
from betlake.core.contract import SITE_WINDOW_STATS, TELEMETRY_RAW, TELEMETRY_REJECTED
from betlake.core.kafka import ensure_topic
from betlake.core.lake import Lake
from betlake.core.processes import restore_default_signals
from betlake.local import broker
from betlake.local.generate import TelemetrySpec
from tests.faults import figure_differences, gold_rows, truth_rows
from tests.kafka_topics import read_topic

SAMPLE_SECONDS = 5
WARM_UP_MINUTES = 5


class Sample(NamedTuple):
    """One look at the job: seconds since sending began, RSS (MiB) of the job and its Prism
    runner, of the job alone, the CPU seconds both have used so far, and the CPU seconds the
    machine's hypervisor has taken from it so far (its other guests': steal time)."""

    seconds: float
    rss: float
    job_rss: float
    cpu: float
    stolen: float


def family(pid: int) -> list[int]:
    """A process and its descendants (the job and its Prism runner)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        kids = [int(p) for p in children.read_text().split()]
    except OSError:
        kids = []
    return [pid, *(member for kid in kids for member in family(kid))]


def sample(pid: int, began: float) -> Sample:
    pids = family(pid)
    return Sample(time.time() - began, sum(map(rss_mib, pids)), rss_mib(pid),
                  sum(map(cpu_seconds, pids)), stolen_seconds())  # fmt: skip


def stolen_seconds() -> float:
    """CPU seconds the hypervisor has given other guests while this machine wanted them
    (/proc/stat's steal time, all CPUs), so far."""
    with open("/proc/stat") as stat:
        return int(stat.readline().split()[8]) / os.sysconf("SC_CLK_TCK")


def per_second(samples: list[Sample], field: str) -> float:
    """How much ``field`` (a running total) grew a second between the first and the last of
    ``samples``."""
    if len(samples) < 2 or samples[-1].seconds == samples[0].seconds:
        return float("nan")
    grown = getattr(samples[-1], field) - getattr(samples[0], field)
    return grown / (samples[-1].seconds - samples[0].seconds)


def cores(samples: list[Sample]) -> float:
    """CPU cores used on average between the first and the last of ``samples``."""
    return per_second(samples, "cpu")


def stolen_share(samples: list[Sample]) -> float:
    """The share of the machine's CPU time its hypervisor took between the first and the
    last of ``samples``: a shared host's noise, which a minute's delay can be read against."""
    return per_second(samples, "stolen") / (os.cpu_count() or 1)


def wait_until_reading(log: Path, job: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until the job has started its pipeline (its log says what it reads) and a few
    seconds more, for its worker to start the reads."""
    deadline = time.monotonic() + timeout
    while "reading kafka" not in log.read_text():
        if job.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the job did not start reading; its log: {log}")
        time.sleep(0.5)
    time.sleep(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10_000, help="events a second")
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--speedup", type=float, default=60, help="event time per wall second")
    parser.add_argument("--out", type=Path, default=Path("reports/soak.png"))
    args = parser.parse_args()
    restore_default_signals()  # Ctrl-C stops it even when started where SIGINT is ignored
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C: its broker stops too

    work = Path(tempfile.mkdtemp(prefix="betlake-soak-"))
    bootstrap = f"127.0.0.1:{broker.free_port_pair()}"
    print(f"machine: {machine()}")
    broker.start(bootstrap, home=work / "kafka", timeout=180)
    producer = job = None
    try:
        settings = lake_settings(work / "lake", bootstrap, "soak")
        ensure_topic(settings, settings.stats_topic, compacted=True)
        wait_for_group_coordinator(settings)
        chunk = timedelta(seconds=60 * args.speedup)  # one wall minute of event time
        start = datetime.now(UTC).replace(second=0, microsecond=0) - chunk * (args.minutes + 1)
        specs = [
            TelemetrySpec(int(args.rate * 60), start + chunk * minute, chunk, seed=100 + minute)
            for minute in range(args.minutes)
        ]
        spans = write_spans(specs, settings.window_seconds, work / "spans")
        env = {**os.environ, "BETLAKE_LAKE": settings.lake,
               "BETLAKE_REFERENCE": str(settings.reference), "BETLAKE_KAFKA_BOOTSTRAP": bootstrap,
               "BETLAKE_TELEMETRY_TOPIC": settings.telemetry_topic,
               "BETLAKE_STATS_TOPIC": settings.stats_topic}  # fmt: skip
        # The producer starts once the job reads: started before, the job would begin behind a
        # backlog; and the job must not wait longer than the idle timeout for its first message,
        # or its partitions would follow the wall clock and the old events to come be too late.
        with open(work / "job.log", "w") as job_log:
            job = subprocess.Popen([sys.executable, "-m", "betlake.cli", "stream"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=job_log)  # fmt: skip
        wait_until_reading(work / "job.log", job)
        producer = producer_process(bootstrap, settings.telemetry_topic, spans, args.rate,
                                    settings.window_seconds,
                                    settings.max_out_of_orderness_seconds)  # fmt: skip
        producer.wait("sending")
        began = time.time()
        samples: list[Sample] = []
        while producer.process.is_alive() and job.poll() is None:
            samples.append(sample(job.pid, began))
            print(f"\r{samples[-1].seconds / 60:5.1f} min  RSS {samples[-1].rss:,.0f} MiB",
                  end="", flush=True)  # fmt: skip
            producer.process.join(SAMPLE_SECONDS)
        print()
        sent = producer.wait("done", timeout=60)
        # the last windows fire: each partition's watermark passes them once it is idle
        time.sleep(
            settings.idle_timeout_seconds + 2 * (settings.window_seconds + 60) / args.speedup
        )
        figures = read_topic(settings, settings.stats_topic)
        published = first_on_time(figures)
        fired = first_on_time(figures, fired=True)
    finally:
        if job is not None and job.poll() is None:
            job.send_signal(signal.SIGINT)
            job.wait(60)
        if producer is not None:
            producer.stop()
        shutil.rmtree(work / "spans", ignore_errors=True)  # GBs in a long run, whatever happened
        broker.stop(home=work / "kafka")
    if job.returncode not in (0, -signal.SIGINT):
        print(f"the job failed (exit {job.returncode}); its log: {work / 'job.log'}")
        return
    checks, equal = check_figures(settings, figures)
    report(args, sent, samples, published, fired, began)
    print("\n".join(checks))
    print(commit_rates(settings, sent["ended"] - sent["began"]))
    if equal:  # the job's log is kept beside the plot: what it did is worth reading either way
        shutil.copyfile(work / "job.log", args.out.with_suffix(".job.log"))
        print(f"the job's log: {args.out.with_suffix('.job.log')}")
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"the lake and the job's log are kept in {work}")


def commit_rates(settings: Settings, seconds: float) -> str:
    """The commits to each table a second of the run (at this rate a commit costs more than
    the rows in it)."""
    lake = Lake.of(settings)
    tables = (TELEMETRY_RAW, TELEMETRY_REJECTED, SITE_WINDOW_STATS)
    commits = ", ".join(f"{t.name} {(lake.version(t.name) + 1) / seconds:.1f}" for t in tables)
    return f"commits a second, compactions included: {commits}"


def check_figures(
    settings: Settings, figures: list[tuple[str, dict | None, float]]
) -> tuple[list[str], bool]:
    """Gold against the truth recomputed from bronze (to the cent), and the topic's first ON_TIME
    figure of each window and site against the truth's event count (fewer: the pane fired
    before every on-time event was read)."""
    lake = Lake.of(settings)
    truth = truth_rows(lake, settings.window_seconds)
    gold = gold_rows(lake)
    missing, differ = figure_differences(gold, truth, truth.keys())
    extra = len(gold.keys() - truth.keys())
    equal = not (differ or missing or extra)
    verdict = "equal" if equal else "NOT equal"
    first: dict[tuple, int] = {}
    late = 0
    for _, value, _ in figures:
        if value is None:
            continue
        late += value["pane"] == "LATE"
        key = (datetime.fromisoformat(value["window_start"]), value["site_id"])
        if value["pane"] == "ON_TIME":
            first.setdefault(key, value["events"])
    short = sum(events < truth[key]["events"] for key, events in first.items() if key in truth)
    examples = [f"  {key[0]:%Y-%m-%d %H:%M} {key[1]}: (gold, truth) {columns}"
                for key, columns in list(differ.items())[:3]]  # fmt: skip
    return [
        f"gold against the truth over bronze ({len(truth):,} window-site rows): {verdict} to the "
        f"cent ({len(differ)} differ, {len(missing)} missing, {extra} extra)",
        f"ON_TIME figures counting fewer events than the truth (late events came, or it fired "
        f"early): {short} of "
        f"{len(first):,}; LATE figures published: {late}",
        *examples,
    ], equal


def report(
    args,
    sent: dict,
    samples: list[Sample],
    published: dict,
    fired: dict,
    began: float,
) -> None:
    """Print the per-minute series, the verdicts, and draw them; each window's delay goes to
    a CSV beside the plot. A delay is the time to the pane's firing (the watermark passing the
    window's end) plus the time from firing to publishing (gold's upsert, the topic)."""
    delays: dict[int, list[float]] = defaultdict(list)
    to_fire: dict[int, list[float]] = defaultdict(list)
    lines = ["window_start_us,closing_event_sent_s,fired_s,first_on_time_s,delay_s"]
    for window, at in sorted(sent["first_sent"].items()):
        if window in published:
            minute, done = int((at - began) // 60), published[window]
            delays[minute].append(done - at)
            to_fire[minute].append(fired[window] - at)
            lines.append(f"{window},{at - began:.3f},{fired[window] - began:.3f},"
                         f"{done - began:.3f},{done - at:.3f}")  # fmt: skip
    early = sum(d < 0 for ds in delays.values() for d in ds)
    by_minute: dict[int, list[Sample]] = defaultdict(list)
    for taken in samples:
        by_minute[int(taken.seconds // 60)].append(taken)
    rate = sent["messages"] / (sent["ended"] - sent["began"])
    windows = sum(map(len, delays.values()))
    print(f"{sent['messages']:,} messages at {rate:,.0f}/s (asked {args.rate:,.0f}) for "
          f"{args.minutes} min; {windows} windows published ON_TIME; the job and Prism used "
          f"{cores(samples):.2f} CPU cores, {cores(samples) / rate * 1e6:.0f} us per "
          f"message; the hypervisor took {stolen_share(samples):.0%} of the machine's "
          f"CPU")  # fmt: skip
    if early:
        print(f"{early} windows published before the event that closes them was sent: the "
              f"watermark ran ahead of the events (see the CSV)")  # fmt: skip
    print("minute  RSS MiB (median)  of which the job  CPU cores  windows  publish delay p95 s  "
          "of which to fire  CPU stolen")  # fmt: skip
    for minute in range(args.minutes):
        taken = by_minute[minute]
        mib = statistics.median(t.rss for t in taken) if taken else float("nan")
        job_mib = statistics.median(t.job_rss for t in taken) if taken else float("nan")
        p95 = percentile(delays[minute], 0.95) if delays[minute] else float("nan")
        fire95 = percentile(to_fire[minute], 0.95) if to_fire[minute] else float("nan")
        print(f"{minute:6d}  {mib:16,.0f}  {job_mib:16,.0f}  {cores(taken):9.2f}  "
              f"{len(delays[minute]):7d}  "
              f"{p95:19.2f}  {fire95:16.2f}  {stolen_share(taken):10.0%}")  # fmt: skip
    steady = [t.rss for t in samples if t.seconds >= WARM_UP_MINUTES * 60]
    if steady:
        mean = statistics.mean(steady)
        spread = max(abs(min(steady) / mean - 1), abs(max(steady) / mean - 1))
        verdict = "met" if spread <= 0.10 else "NOT met"
        print(f"RSS after minute {WARM_UP_MINUTES}: mean {mean:,.0f} MiB, within "
              f"{spread:.1%} of it (target 10%): {verdict}")  # fmt: skip
    worst = max((percentile(d, 0.95) for d in delays.values() if d), default=float("nan"))
    print(f"publish delay p95, worst minute: {worst:.2f}s (target 2 s): "
          f"{'met' if worst <= 2 else 'NOT met'}")  # fmt: skip
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    top.plot([t.seconds / 60 for t in samples], [t.rss for t in samples], label="job + Prism")
    top.plot([t.seconds / 60 for t in samples], [t.job_rss for t in samples], label="job")
    top.set_ylabel("RSS (MiB)")
    top.legend(loc="lower right")
    minutes = [minute for minute in sorted(delays) if delays[minute]]
    bottom.plot(minutes, [percentile(delays[m], 0.95) for m in minutes], marker="o")
    bottom.axhline(2, color="red", linestyle="--", linewidth=1)
    bottom.set_ylabel("publish delay p95 (s)")
    bottom.set_xlabel("minutes")
    stolen = bottom.twinx()  # the host's noise, which a minute's delay is read against
    stolen.bar(minutes, [100 * stolen_share(by_minute[m]) for m in minutes], color="grey",
               alpha=0.3, width=0.8)  # fmt: skip
    stolen.set_ylabel("CPU taken by the host (%)")
    stolen.set_ylim(0, 100)
    bottom.set_zorder(stolen.get_zorder() + 1)  # the delays over the bars
    bottom.patch.set_visible(False)
    figure.suptitle(f"betlake stream soak: {args.rate:,.0f} events/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    args.out.with_suffix(".csv").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
