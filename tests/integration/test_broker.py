"""Integration test: a real single-node KRaft Kafka broker via ``betlake.local.broker``.

Needs Java 17+ (and Maven once, to fetch the jars into the cache). The tests run in file
order and share one broker; the last one stops it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from betlake.local import broker

pytestmark = pytest.mark.integration

TOPIC = "betlake-it-roundtrip"
N_MESSAGES = 100


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, int]]:
    """Run a broker on a free port with a tmp home: (bootstrap, home, pid)."""
    home = tmp_path_factory.mktemp("kafka-home")
    bootstrap = f"127.0.0.1:{broker.free_port_pair()}"
    pid = broker.start(bootstrap, home=home, timeout=180)
    try:
        yield bootstrap, home, pid
    finally:
        broker.stop(home=home)


def test_status_running(kafka: tuple[str, Path, int]) -> None:
    bootstrap, home, pid = kafka
    line = broker.status(home=home)
    assert line.startswith("running"), line
    assert str(pid) in line and bootstrap in line


def test_start_is_idempotent(kafka: tuple[str, Path, int]) -> None:
    bootstrap, home, pid = kafka
    assert broker.start(bootstrap, home=home, timeout=30) == pid


def test_produce_consume_roundtrip(kafka: tuple[str, Path, int]) -> None:
    bootstrap, _, _ = kafka
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1)])
    futures[TOPIC].result(timeout=30)
    assert len(admin.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions) == 3

    expected = {(f"key-{i}", f"value-{i}") for i in range(N_MESSAGES)}
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for key, value in sorted(expected):
        producer.produce(TOPIC, key=key.encode(), value=value.encode())
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "betlake-it",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([TOPIC])
    got: set[tuple[str, str]] = set()
    partitions: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while len(got) < N_MESSAGES and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.add((msg.key().decode(), msg.value().decode()))
            partitions.add(msg.partition())
    finally:
        consumer.close()
    assert got == expected
    assert partitions <= {0, 1, 2} and len(partitions) > 1


def _in_time_wait(port: int) -> bool:
    """Whether a TCP connection of local port ``port`` is in TIME_WAIT (Linux /proc)."""
    rows = [row for table in ("tcp", "tcp6")
            for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]]  # fmt: skip
    return any(
        int(local.rsplit(":", 1)[1], 16) == port and state == "06"
        for local, state in (row.split()[1:4:2] for row in rows)
    )


def test_a_port_another_process_listens_on_is_taken(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:  # with SO_REUSEADDR, as servers do
        port = server.getsockname()[1]
        assert not broker._port_free(port)
        with pytest.raises(broker.BrokerError, match="already in use"):
            broker.start(f"127.0.0.1:{port}", home=tmp_path)
    assert broker._port_free(port)


def test_start_again_right_after_stop(kafka: tuple[str, Path, int]) -> None:
    bootstrap, home, pid = kafka
    port = int(bootstrap.rsplit(":", 1)[1])
    client = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    client.produce(TOPIC, b"before")  # a connection the broker closes when it stops
    assert client.flush(30) == 0
    assert broker.stop(home=home) is True
    assert _in_time_wait(port), "the stop left no TIME_WAIT connection: nothing is tested"

    assert broker.start(bootstrap, home=home, timeout=120) != pid
    assert broker.status(home=home).startswith("running")
    client.produce(TOPIC, b"after")
    assert client.flush(30) == 0


def test_stop(kafka: tuple[str, Path, int]) -> None:
    bootstrap, home, _ = kafka
    port = int(bootstrap.rsplit(":", 1)[1])
    assert broker.stop(home=home) is True
    assert broker.status(home=home).startswith("stopped")
    assert not _answers(port)
    assert broker.stop(home=home) is False
