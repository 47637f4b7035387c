"""The stream's transports on the real servers: ``betlake produce`` replays a JSON lines file
byte for byte (bad lines too) into Kafka, NATS JetStream and the Pub/Sub emulator, read back
with each transport's own client; ``betlake local start|status|env|stop`` drives NATS and the
Pub/Sub emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from betlake.core.config import Settings
from betlake.core.kafka import client_config, partitions_of
from betlake.core.nats import NatsClient
from betlake.core.pubsub import PubSubReader
from betlake.local.broker import free_port_pair

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parents[2]
LINES = [
    json.dumps({"event_id": f"e{i}", "player_id": f"p{i % 7}", "event_type": "page_view",
                "event_time": "2026-11-24T10:00:00Z", "site_id": "s1"}).encode()
    for i in range(40)
] + [b"{not json", b"", "caf\u00e9".encode(), b"\xff\xfe raw", b'{"player_id": 5}']  # fmt: skip


def run_cli(*args: str, env: dict[str, str], cwd: Path = PROJECT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "betlake.cli", *args], cwd=cwd,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def read_kafka(settings: Settings, count: int) -> list[list[bytes]]:
    consumer = Consumer(client_config(settings, **{"group.id": f"t-{time.time_ns()}",
                                                   "enable.auto.commit": False}))  # fmt: skip
    partitions = partitions_of(settings, settings.telemetry_topic)
    consumer.assign([TopicPartition(settings.telemetry_topic, p, 0) for p in partitions])
    by_partition: list[list[bytes]] = [[] for _ in partitions]
    deadline = time.monotonic() + 60
    while sum(map(len, by_partition)) < count and time.monotonic() < deadline:
        for message in consumer.consume(100, 0.5):
            if not message.error():
                by_partition[message.partition()].append(message.value() or b"")
    consumer.close()
    return by_partition


def read_nats(settings: Settings) -> list[tuple[int, bytes]]:
    client = NatsClient(settings)
    try:
        client.ensure_stream()
        return sorted((d.position, d.payload) for shard in range(settings.source_shards)
                      for d in client.fetch(shard, 1000, 2))  # fmt: skip
    finally:
        client.close()


def read_pubsub(settings: Settings, count: int) -> list[bytes]:
    reader, got = PubSubReader(settings), []
    deadline = time.monotonic() + 60
    try:
        while len(got) < count and time.monotonic() < deadline:
            got += reader.fetch(0, 1000, 1)
    finally:
        reader.close()
    return [d.payload for d in got]


@pytest.mark.parametrize("source", ["kafka", "nats", "pubsub"])
def test_produce_replays_a_file_byte_for_byte(
    source: str, kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    file = tmp_path / "telemetry.jsonl"
    file.write_bytes(b"\n".join(LINES) + b"\n")
    env = {"BETLAKE_SOURCE": source, "BETLAKE_TELEMETRY_TOPIC": f"produce-{source}",
           "BETLAKE_KAFKA_BOOTSTRAP": kafka_bootstrap}  # fmt: skip
    if source == "nats":
        env["BETLAKE_NATS_URL"] = request.getfixturevalue("nats_url")
    if source == "pubsub":
        env["PUBSUB_EMULATOR_HOST"] = request.getfixturevalue("pubsub_host")
    done = run_cli("produce", str(file), "--rate", "200", env=env)
    assert done.returncode == 0, done.stderr
    assert f"sent {len(LINES)} lines" in done.stdout
    settings = Settings.from_env(env)
    if source == "kafka":  # in order within each partition (a player's lines stay in one)
        partitions = read_kafka(settings, len(LINES))
        assert sorted(b for p in partitions for b in p) == sorted(LINES)
        for received in partitions:
            assert received == [line for line in LINES if line in received]
    elif source == "nats":  # in order across the whole stream (its sequence)
        assert [payload for _, payload in read_nats(settings)] == LINES
    else:  # Pub/Sub keeps no order
        assert sorted(read_pubsub(settings, len(LINES))) == sorted(LINES)


def test_nats_drops_a_duplicate_event_id_on_publish(nats_url: str, tmp_path: Path) -> None:
    file = tmp_path / "twice.jsonl"
    file.write_bytes(LINES[0] + b"\n" + LINES[0] + b"\n" + b"bad\n" + b"bad\n")
    env = {"BETLAKE_SOURCE": "nats", "BETLAKE_NATS_URL": nats_url,
           "BETLAKE_TELEMETRY_TOPIC": "produce-twice"}  # fmt: skip
    assert run_cli("produce", str(file), env=env).returncode == 0
    # the same event_id once (Nats-Msg-Id); lines without one are never deduplicated
    assert [p for _, p in read_nats(Settings.from_env(env))] == [LINES[0], b"bad", b"bad"]


@pytest.mark.parametrize(
    ("service", "address"),
    [("nats", "BETLAKE_NATS_URL"), ("pubsub", "PUBSUB_EMULATOR_HOST")],
)
def test_local_service_start_status_env_stop(service: str, address: str, tmp_path: Path) -> None:
    port = free_port_pair()
    value = f"nats://127.0.0.1:{port}" if service == "nats" else f"127.0.0.1:{port}"
    env = {address: value}
    try:
        started = run_cli("local", "start", service, env=env, cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        assert f"127.0.0.1:{port}" in started.stdout
        assert (tmp_path / ".betlake" / service / "server.pid").is_file()
        status = run_cli("local", "status", service, env=env, cwd=tmp_path).stdout
        assert f"{service} running on 127.0.0.1:{port}" in status
        exports = run_cli("local", "env", service, env=env, cwd=tmp_path).stdout.splitlines()
        assert f"export BETLAKE_SOURCE={service}" in exports
        assert f"export {address}={value}" in exports
    finally:
        stopped = run_cli("local", "stop", service, env=env, cwd=tmp_path)
    assert stopped.stdout.strip() == f"{service} stopped"
    assert "stopped" in run_cli("local", "status", service, env=env, cwd=tmp_path).stdout


def test_pubsub_without_the_cloud_sdk_fails_saying_so(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    done = run_cli("local", "start", "pubsub", env={"PATH": str(bare)}, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "betlake local: the Pub/Sub emulator needs the Google Cloud SDK (gcloud): not found on PATH"
    ]
