"""Fault campaign (not CI): kill -9 the stream's process group at random moments of a paced run.

Starts its own Kafka broker on free 127.0.0.1 ports and a temporary lake; runs the paced
producer of ``tests/faults.py`` for --seconds while ``betlake stream --drain-when-idle`` runs as
a subprocess in its own process group; --kills times, at seeded random moments, the whole group
is killed with SIGKILL and a new job started at once; the last one drains and exits by itself.
Then prints the accounting against the producer's log and a DuckDB truth over bronze: lost,
double-counted and wrongly-flagged events (all must be 0) and the gold rows that differ.

    .venv/bin/python -m benchmarks.fault_campaign [--seconds 360] [--kills 10] [--seed 1]
"""

from __future__ import annotations

import argparse
import itertools
import random
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from betlake.local import broker
from tests.faults import (
    WAITED,
    JobRuns,
    PacedProducer,
    Workload,
    account,
    check_read_everything,
    fault_settings,
    kill_group,
    prepare,
)

DRAIN_IDLE = 15


def kill_moments(rng: random.Random, seconds: float, kills: int, gap: float = 12) -> list[float]:
    """``kills`` moments (seconds after the producer's start), at least ``gap`` apart."""
    while True:
        moments = sorted(rng.uniform(20, seconds - 35) for _ in range(kills))
        if all(b - a >= gap for a, b in itertools.pairwise(moments)):
            return moments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=360, help="how long the producer runs")
    parser.add_argument("--rate", type=float, default=100, help="messages a second")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet", action="store_true",
                        help="in-order events only, no tail: with --kills 0, checks the truth "
                             "against a clean run")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="betlake-faults-"))
    bootstrap = f"127.0.0.1:{broker.free_port_pair()}"
    moments = kill_moments(random.Random(args.seed), args.seconds, args.kills)
    workload = (
        replace(Workload.quiet(args.seconds, args.rate), seed=args.seed) if args.quiet
        else Workload(seconds=args.seconds, rate=args.rate, seed=args.seed,
                      too_late_at=((30, 1e9),))
    )  # fmt: skip
    jobs: JobRuns | None = None
    kills: list[float] = []
    began = time.monotonic()
    try:
        broker.start(bootstrap, home=work / "kafka", timeout=180)
        settings = fault_settings(str(work / "lake"), bootstrap, "campaign")
        prepare(settings)
        jobs = JobRuns(settings, work, DRAIN_IDLE)
        job = jobs.start()
        producer = PacedProducer(settings, workload)
        producer.start()
        at = ", ".join(f"+{m:.0f}s" for m in moments) or "no moment"
        print(f"producing {args.seconds:g}s at {args.rate:g} msg/s; SIGKILL to the job's process "
              f"group at {at}", flush=True)  # fmt: skip
        for moment in moments:
            kills.append(producer.wait_until(moment))
            kill_group(job, signal.SIGKILL)
            job.wait(30)
            job = jobs.start()
            print(f"  +{kills[-1] - producer.started_at:5.1f}s killed, restarted", flush=True)
        sent = producer.finish(args.seconds + 120)
        try:
            code = job.wait(DRAIN_IDLE + 180)
            print(f"the last (drained) run exited with status {code}")
        except subprocess.TimeoutExpired:
            print(f"the last (drained) run had not ended {DRAIN_IDLE + 180}s after the producer")
        unread = check_read_everything(settings, sent)
        result = account(settings, sent, kills)
    finally:
        if jobs is not None:
            jobs.kill_all()
        broker.stop(home=work / "kafka")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    f = result.figures
    lost = f["valid events lost (not in bronze)"] + f["on-time events missing from gold"]
    doubled = f["events stored more than once in bronze"] + f["events counted beyond the truth"]
    flagged = (f["too-late events not flagged arrived_late"]
               + f[next(k for k in f if k.startswith("on-time events ("))])  # fmt: skip
    print(f"\n{len(kills)} kills in {time.monotonic() - began:.0f}s")
    for name, value in f.items():
        print(f"  {name}: {value}")
    print(f"lost events: {lost} (not in bronze, or on time in bronze but not in gold)")
    print(f"double-counted events: {doubled} (stored twice, or counted beyond the truth)")
    print(f"wrongly-flagged events: {flagged} (too late but not flagged, or on time but flagged; "
          f"{f[f'of those, stored {WAITED}s or more after being sent']} unflagged too-late ones "
          f"were stored {WAITED}s or more after being sent: first read by a restarted job, in a "
          f"backlog)")  # fmt: skip
    print(f"gold rows differing from the truth: "
          f"{f['gold rows differing from the truth over bronze' + chr(39) + 's on-time events']}"
          f" of {f['gold rows']} ({f['true rows']} true rows)")  # fmt: skip
    for line in unread:
        print(f"unread: {line}")
    for problem in result.problems:
        print(f"- {problem}")


if __name__ == "__main__":
    main()
