"""Kafka clients while no broker answers (a closed local port): they wait, say so at a bounded
rate, never drop a message silently, and give up only when told to stop."""

from __future__ import annotations

import logging
import socket
import threading

import pytest

from betlake.core.config import Settings
from betlake.core.kafka import (
    RETRY_FOREVER,
    KafkaError,
    end_offsets,
    log_wait,
    producer,
    stream_consumer,
)


@pytest.fixture
def away() -> Settings:
    """Settings whose bootstrap is a local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return Settings(kafka_bootstrap=f"127.0.0.1:{port}")


def test_waiting_is_logged_at_most_every_few_seconds(
    away: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="betlake.core.kafka"):
        for _ in range(3):
            log_wait(away.kafka_bootstrap, "first")
    assert [r.getMessage() for r in caplog.records] == [
        f"waiting for Kafka at {away.kafka_bootstrap}: first"
    ]


def test_a_message_kafka_never_took_is_an_error(away: Settings) -> None:
    out = producer(away, **{"message.timeout.ms": 500})
    out.produce("figures", b"value")
    with pytest.raises(KafkaError, match="1 figures were not delivered"):
        out.deliver("figures")


def test_a_waiting_delivery_gives_up_only_when_stopping(away: Settings) -> None:
    out = producer(away, **RETRY_FOREVER)
    out.produce("figures", b"value")
    stopping = threading.Event()
    threading.Timer(2, stopping.set).start()
    with pytest.raises(KafkaError, match="not delivered: the job is stopping"):
        out.deliver("figures", stopping)
    assert stopping.is_set()


def test_the_end_of_a_partition_is_unknown_while_kafka_is_away(away: Settings) -> None:
    consumer = stream_consumer(away)
    try:
        assert end_offsets(consumer, away, [0]) is None
    finally:
        consumer.close()
