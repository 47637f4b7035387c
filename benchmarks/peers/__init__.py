"""Peer stream processors for :mod:`benchmarks.stream_throughput`, each in its own virtualenv.

A peer is a script beside this file (``bytewax_job.py``, ``quix_job.py``, ``handwritten.py``)
that reads a telemetry topic from its start to end offsets captured before it starts, drops
malformed messages (the rules of :mod:`benchmarks.peers.peerkit`), deduplicates by event id and
aggregates 5-minute event-time windows per site, then prints one JSON line of figures.
Each runs with its own pinned packages in ``<BETLAKE_CACHE>/peers/<name>-<version>-venv``,
made with ``python3.11 -m venv`` on first use, so no peer pin touches the project's ``.venv``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer

from betlake.core.config import BetlakeError, Settings
from betlake.core.kafka import client_config, end_offsets, partitions_of
from betlake.core.processes import restore_default_signals

HERE = Path(__file__).resolve().parent
_ORJSON = "orjson==3.11.5"
_CONFLUENT = "confluent-kafka==2.16.1"  # the project's pin


@dataclass(frozen=True)
class Peer:
    """A peer: its script and the packages pinned in its own virtualenv."""

    name: str
    script: str
    packages: tuple[str, ...]  # the first names the venv: <name>-<its version>-venv
    target: float | None = None  # issue 9: betlake's events/s at least this many times the peer's

    def venv(self, settings: Settings) -> Path:
        version = self.packages[0].split("==")[1]
        return settings.cache / "peers" / f"{self.name}-{version}-venv"


PEERS = {
    peer.name: peer
    for peer in (
        Peer("bytewax", "bytewax_job.py", ("bytewax[kafka]==0.21.1", _CONFLUENT, _ORJSON), 1.4),
        Peer("quix", "quix_job.py", ("quixstreams==3.28.1", _ORJSON), 7.0),
        Peer("handwritten", "handwritten.py", (_CONFLUENT, _ORJSON)),
    )
}


def peer_python(peer: Peer, settings: Settings) -> Path:
    """The peer's venv interpreter, making the venv first if it is missing or pinned otherwise."""
    venv = peer.venv(settings)
    python, pins = venv / "bin" / "python", venv / "betlake-pins.txt"
    wanted = "\n".join(peer.packages) + "\n"
    if python.exists() and pins.exists() and pins.read_text() == wanted:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    interpreter = shutil.which("python3.11") or sys.executable
    log = venv.parent / f"{venv.name}.log"
    with log.open("w") as out:
        for argv in (
            [interpreter, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             *peer.packages],
        ):  # fmt: skip
            if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode:
                raise BetlakeError(f"could not make the {peer.name} venv ({venv}): see {log}")
    pins.write_text(wanted)
    return python


def run_peer(name: str, settings: Settings, timeout: float = 3600) -> dict:
    """Run a peer over ``settings.telemetry_topic`` up to its end offsets now; its figures.

    The peer's window grace is the out-of-orderness bound plus the allowed lateness, as a
    window of betlake's stream closes then.
    """
    peer = PEERS.get(name)
    if peer is None:
        raise BetlakeError(f"no peer named {name!r}: choose from {', '.join(PEERS)}")
    python = peer_python(peer, settings)
    consumer = Consumer(client_config(settings, **{"group.id": "bench-peer-offsets"}))
    try:
        ends = end_offsets(consumer, settings, partitions_of(settings, settings.telemetry_topic))
    finally:
        consumer.close()
    if ends is None:
        raise BetlakeError(f"the end offsets of {settings.telemetry_topic} are unknown")
    job = {
        "bootstrap": settings.kafka_bootstrap, "topic": settings.telemetry_topic,
        "ends": {str(p): end for p, end in ends.items()},
        "window_seconds": settings.window_seconds,
        "grace_seconds": settings.max_out_of_orderness_seconds
        + settings.allowed_lateness_seconds,
        "max_clock_skew_seconds": settings.max_clock_skew_seconds,
    }  # fmt: skip
    run = subprocess.run(
        [str(python), str(HERE / peer.script), json.dumps(job)],
        capture_output=True, text=True, timeout=timeout, preexec_fn=restore_default_signals,
    )  # fmt: skip
    lines = run.stdout.strip().splitlines()
    if run.returncode or not lines:
        tail = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise BetlakeError(f"peer {name} failed (exit {run.returncode}): {tail}")
    return json.loads(lines[-1])
