"""End-to-end accounting of the stream under faults, on the real transports (Kafka, NATS
JetStream, the Pub/Sub emulator), Prism and Delta tables.

A paced producer (see :class:`tests.faults.Workload`) runs for about two minutes while
``betlake stream`` runs as a subprocess in its own process group: (a) drained, started just
before the producer; (b) killed with SIGKILL mid-run, restarted at once; (c) stopped with
SIGTERM mid-run (it must exit 0 within 10 s, without a traceback, leaving no process), then
restarted. Every restart is a drained run, so each case ends by itself. Then every valid event
must be in bronze once, and either in the figures or flagged arrived_late, never both. Kafka
runs all three; NATS and Pub/Sub (acknowledged once bronze holds a message, their open windows
rebuilt from bronze at a restart) run the kill -9 case, a shorter workload.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from betlake.core.lake import Lake
from tests.faults import (
    JobRuns,
    PacedProducer,
    Workload,
    account,
    check_read_everything,
    fault_settings,
    kill_group,
    prepare,
    wait_group_empty,
)

pytestmark = pytest.mark.integration
# seconds: --drain-when-idle of every run. A drain ends once no end offset of the topic has
# moved for that long. Drains that ended while the producer was sending (stops 28 and 29) were
# readers polling the ends at once (fixed: TopicEnds takes a lock), not a stalled producer:
# the report says how long after its send each unread message was delivered.
DRAIN_IDLE = 25
FAULT_AT = 60  # seconds after the producer's start: the workload sends no too-late event then
STOP_WITHIN = 10  # seconds: the contract's clean stop


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])


CASES = [("kafka", "drained"), ("kafka", "kill-9"), ("kafka", "sigterm"), ("nats", "kill-9"),
         ("pubsub", "kill-9")]  # fmt: skip
# The restart cases: 110 s, too-late events at 30-50 s, the sparse tail from 80 s
SHORT = Workload(seconds=110, too_late_at=((30, 50),))


def source_env(source: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings that point a fault run at ``source`` (its server started on first use)."""
    if source == "nats":
        return {"BETLAKE_SOURCE": "nats", "BETLAKE_NATS_URL": request.getfixturevalue("nats_url"),
                "BETLAKE_ACK_DEADLINE_SECONDS": "10"}  # fmt: skip
    if source == "pubsub":
        return {"BETLAKE_SOURCE": "pubsub", "BETLAKE_ACK_DEADLINE_SECONDS": "10",
                "PUBSUB_EMULATOR_HOST": request.getfixturevalue("pubsub_host")}  # fmt: skip
    return {}


@pytest.mark.parametrize(("source", "fault"), CASES, ids=[f"{s}-{f}" for s, f in CASES])
def test_every_event_counted_or_flagged(
    source: str, fault: str, kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = fault_settings(str(tmp_path / "lake"), kafka_bootstrap, f"faults-{source}-{fault}",
                              **source_env(source, request))  # fmt: skip
    prepare(settings)
    workload = Workload() if source == "kafka" else SHORT
    jobs = JobRuns(settings, tmp_path, DRAIN_IDLE)
    problems: list[str] = []
    kills: list[float] = []  # when the job's process group was signalled (wall clock)
    producer = PacedProducer(settings, workload)
    try:
        job = jobs.start()
        producer.start()
        if fault != "drained":
            kills.append(producer.wait_until(FAULT_AT))
            if fault == "kill-9":
                kill_group(job, signal.SIGKILL)
                job.wait(30)
            else:
                problems += stop_cleanly(jobs, job)
            job = jobs.start()  # at once
        sent = producer.finish(workload.seconds + 60)
        try:
            code = job.wait(DRAIN_IDLE + 120)
        except subprocess.TimeoutExpired:
            problems.append(f"the drained run had not ended {DRAIN_IDLE + 120}s after the last "
                            f"message (killed then; the checks below see what it left); its "
                            f"output:\n{tail(jobs.output(job), 8)}")  # fmt: skip
        else:
            if code != 0 or "Traceback" in jobs.output(job):
                problems.append(f"the drained run ended with status {code}; its output:\n"
                                f"{tail(jobs.output(job), 15)}")  # fmt: skip
    finally:
        jobs.kill_all()
    problems += [f"the drained run did not read everything: {line}"
                 for line in check_read_everything(settings, sent)]  # fmt: skip
    accounting = account(settings, sent, kills)
    print(f"{source} {fault}: {accounting.figures}")
    problems += accounting.problems
    assert Lake.of(settings).open("site_window_stats") is not None, "the stream wrote no gold"
    assert not problems, f"{fault}: {len(problems)} problems:\n" + "\n".join(problems)


def stop_cleanly(jobs: JobRuns, job: subprocess.Popen) -> list[str]:
    """SIGTERM to the job's process group; what went wrong with the contract's clean stop."""
    problems: list[str] = []
    began = time.monotonic()
    kill_group(job, signal.SIGTERM)
    try:
        code: int | None = job.wait(STOP_WITHIN)
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - began
    left = wait_group_empty(job.pid, max(0.0, began + STOP_WITHIN - time.monotonic()))
    if left:
        kill_group(job, signal.SIGKILL)
        job.wait(30)
    output = jobs.output(job)
    if code != 0:
        problems.append(
            f"SIGTERM to the process group: exit status {code} "
            f"({'still running' if code is None else 'exited'} after {took:.1f}s)"
        )
    if "Traceback" in output or "Segmentation fault" in output or "panic:" in output:
        problems.append(f"SIGTERM to the process group: a crash in the output:\n{tail(output, 12)}")
    if left:
        problems.append(f"SIGTERM to the process group: {len(left)} processes left after "
                        f"{STOP_WITHIN}s: {left}")  # fmt: skip
    return problems
