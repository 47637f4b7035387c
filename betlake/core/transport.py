"""The stream's transport, whichever ``BETLAKE_SOURCE`` names: create what it needs, and
produce JSON lines to it (``betlake produce``, ``betlake generate --to source``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from betlake.core.config import Settings


@dataclass(frozen=True)
class Delivery:
    """One message pulled from a NATS or Pub/Sub shard: its position in the shard, its bytes,
    what acknowledges it (an ack subject, an ack id) and where it came from (bronze's origin)."""

    position: int
    payload: bytes
    token: str
    origin: str


def key_of(line: bytes) -> str | None:
    """The player_id of a JSON line, its message key (None if it has no string one)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    player = event.get("player_id") if isinstance(event, dict) else None
    return player if isinstance(player, str) and player else None


def describe_source(settings: Settings) -> str:
    """The configured source, for messages: which transport, which topic, where."""
    address = {
        "kafka": settings.kafka_bootstrap,
        "nats": settings.nats_url,
        "pubsub": settings.pubsub_emulator_host or "Google Pub/Sub",
    }[settings.source]
    return f"{settings.source} topic {settings.telemetry_topic} on {address}"


def produce_to_source(
    settings: Settings, messages: Iterable[tuple[str | None, bytes]], rate: float | None = None
) -> Iterator[int]:
    """Send (key, payload) messages, in order and unchanged, to the configured source, at most
    ``rate`` a second (creating its topic, stream or subscription first); yields the running
    count (at least every 1000 messages)."""
    if settings.source == "kafka":
        from betlake.core import kafka

        kafka.ensure_topic(settings, settings.telemetry_topic)
        yield from kafka.produce(settings, settings.telemetry_topic, messages, rate)
        return
    if settings.source == "nats":
        from betlake.core.nats import NatsClient

        client = NatsClient(settings)
        try:
            client.ensure_stream()
            yield from _count(client.publish(messages, rate))
        finally:
            client.close()
        return
    from betlake.core import pubsub

    pubsub.ensure_subscription(settings)
    yield from _count(pubsub.publish(settings, messages, rate))


def _count(sent: Iterable[object]) -> Iterator[int]:
    count = 0
    for _ in sent:
        count += 1
        if count % 1000 == 0:
            yield count
    yield count
