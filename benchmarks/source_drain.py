"""Each transport with the same data (not CI): produce a generated file, then drain the stream.

Starts Kafka (for the stats topic, and as a source), NATS and the Pub/Sub emulator on free
127.0.0.1 ports in a temporary folder; generates --count events (plus duplicates and malformed
lines) to a JSON lines file; then for each source: ``betlake produce FILE`` into it (timed), and
``betlake stream --drain-when-idle`` over it into a lake of its own (timed, from start to exit);
prints bronze's rows and late flags and gold's events per source (the same for every source,
except that NATS drops repeated event_ids at publish).

    .venv/bin/python -m benchmarks.source_drain [--count 50000] [--sources kafka nats pubsub]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import PROJECT, REFERENCE
from betlake.core.config import Settings
from betlake.core.lake import Lake
from betlake.core.reference import REFERENCE_TABLES, read_reference_csv
from betlake.local import broker
from betlake.local import nats as nats_server
from betlake.local import pubsub as pubsub_emulator

DRAIN = 10  # seconds: --drain-when-idle


def betlake(env: dict[str, str], *args: str) -> float:
    """Run a betlake command with ``env``; its wall time in seconds (raises if it fails)."""
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "betlake.cli", *args], cwd=PROJECT, check=True,
                   env={**os.environ, **env}, stdout=subprocess.DEVNULL)  # fmt: skip
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--sources", nargs="+", default=["kafka", "nats", "pubsub"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, ExitStack() as servers:
        work = Path(folder)
        env = {"BETLAKE_REFERENCE": str(REFERENCE),
               "BETLAKE_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker.free_port_pair()}",
               "BETLAKE_NATS_URL": f"nats://127.0.0.1:{broker.free_port_pair()}",
               "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{broker.free_port_pair()}",
               "BETLAKE_ACK_DEADLINE_SECONDS": "10"}  # fmt: skip
        broker.start(env["BETLAKE_KAFKA_BOOTSTRAP"], home=work / "kafka", timeout=180)
        servers.callback(broker.stop, home=work / "kafka")
        if "nats" in args.sources:
            nats_server.start(env["BETLAKE_NATS_URL"], home=work / "nats")
            servers.callback(nats_server.stop, home=work / "nats")
        if "pubsub" in args.sources:
            pubsub_emulator.start(env["PUBSUB_EMULATOR_HOST"], home=work / "pubsub")
            servers.callback(pubsub_emulator.stop, home=work / "pubsub")
        data = work / "telemetry.jsonl"
        betlake(env, "generate", "--to", str(data), "--count", str(args.count),
                "--start", "2026-12-01T10:00:00Z", "--span", "30m", "--seed", "3")  # fmt: skip
        lines = sum(1 for _ in data.open("rb"))
        print(f"{lines} lines ({args.count} events) in {data.name}")
        for source in args.sources:
            run = {**env, "BETLAKE_SOURCE": source, "BETLAKE_LAKE": str(work / f"lake-{source}"),
                   "BETLAKE_TELEMETRY_TOPIC": f"bench-{source}",
                   "BETLAKE_STATS_TOPIC": f"stats-{source}"}  # fmt: skip
            lake = Lake(Settings.from_env(run).lake)
            for spec in REFERENCE_TABLES:
                rows = read_reference_csv(spec, Path(run["BETLAKE_REFERENCE"]), datetime.now(UTC))
                lake.overwrite(spec, rows)
            produced = betlake(run, "produce", str(data))
            drained = betlake(run, "stream", "--drain-when-idle", str(DRAIN))
            bronze, late = (
                lake.connect()
                .execute("SELECT count(*), count(*) FILTER (WHERE arrived_late) FROM telemetry_raw")
                .fetchone()
            )
            (gold,) = lake.connect().execute("SELECT sum(events) FROM site_window_stats").fetchone()
            print(f"{source:7} produce {produced:6.1f}s ({lines / produced:7,.0f} lines/s)  "
                  f"stream to drained exit {drained:6.1f}s  bronze {bronze} ({late} late)  "
                  f"gold events {gold}")  # fmt: skip


if __name__ == "__main__":
    main()
