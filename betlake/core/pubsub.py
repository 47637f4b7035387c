"""Google Pub/Sub, in one place: the telemetry topic and the stream's subscription, publishing,
pulling and acknowledging.

The topic is ``BETLAKE_TELEMETRY_TOPIC`` in project ``BETLAKE_PUBSUB_PROJECT``; the stream
reads the subscription ``<topic>-betlake-stream`` (ack deadline
``BETLAKE_ACK_DEADLINE_SECONDS``). With ``PUBSUB_EMULATOR_HOST`` set the clients talk to that
emulator over plain gRPC; unset, to Google Pub/Sub with the application default credentials.
Pub/Sub has no partitions, no order and no offsets: a message's position is its place in this
reader's reads, its origin its message id.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent import futures
from contextlib import suppress

from google.api_core import exceptions as google
from google.cloud import pubsub_v1

from betlake.core.config import BetlakeError, Settings
from betlake.core.transport import Delivery

PUBLISH_WINDOW = 500  # publishes in flight at once
ACK_CHUNK = 1000  # ack ids per acknowledge request (a request is limited to 512 KiB)
MAX_PULL = 1000  # messages a pull may ask for
READ_SECONDS = 1.0  # how long one read keeps pulling while messages come
PULL_SECONDS = 10.0  # a pull's deadline (an unanswered pull's messages wait the ack deadline)


class PubSubError(BetlakeError):
    """Pub/Sub could not be reached or refused a request."""


def _transport(settings: Settings, kind: str):
    if settings.pubsub_emulator_host is None:
        return None
    import grpc
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    channel = grpc.insecure_channel(settings.pubsub_emulator_host)
    return (PublisherGrpcTransport if kind == "publisher" else SubscriberGrpcTransport)(
        channel=channel
    )


def publisher(settings: Settings) -> pubsub_v1.PublisherClient:
    transport = _transport(settings, "publisher")
    return pubsub_v1.PublisherClient(**({"transport": transport} if transport else {}))


def subscriber(settings: Settings) -> pubsub_v1.SubscriberClient:
    transport = _transport(settings, "subscriber")
    return pubsub_v1.SubscriberClient(**({"transport": transport} if transport else {}))


def topic_path(settings: Settings) -> str:
    return f"projects/{settings.pubsub_project}/topics/{settings.telemetry_topic}"


def subscription_path(settings: Settings) -> str:
    name = f"{settings.telemetry_topic}-betlake-stream"
    return f"projects/{settings.pubsub_project}/subscriptions/{name}"


def _where(settings: Settings) -> str:
    return settings.pubsub_emulator_host or "Google Pub/Sub"


def ensure_subscription(settings: Settings) -> list[int]:
    """Create the topic and the stream's subscription if missing; returns the one shard."""
    try:
        with suppress(google.AlreadyExists):
            publisher(settings).create_topic(name=topic_path(settings), timeout=30)
        with suppress(google.AlreadyExists):
            subscriber(settings).create_subscription(
                name=subscription_path(settings), topic=topic_path(settings),
                ack_deadline_seconds=settings.ack_deadline_seconds, timeout=30,
            )  # fmt: skip
    except google.GoogleAPICallError as error:
        raise PubSubError(f"Pub/Sub at {_where(settings)}: {error.message}") from None
    except google.RetryError:
        raise PubSubError(f"Pub/Sub at {_where(settings)} does not answer") from None
    return [0]


def publish(
    settings: Settings, messages: Iterable[tuple[str | None, bytes]], rate: float | None = None
) -> Iterator[str]:
    """Publish (key, payload) messages in order, at most ``rate`` a second (the key is kept as
    the attribute ``key``, "" for none: Pub/Sub refuses a message with neither data nor
    attributes, and an empty line is a message too); yields each message's id once Pub/Sub
    has it."""
    client, topic = publisher(settings), topic_path(settings)
    began, window = time.monotonic(), []
    for sent, (key, payload) in enumerate(messages, 1):
        window.append(client.publish(topic, payload, key=key or ""))  # never empty: a line may be
        if len(window) >= PUBLISH_WINDOW or rate:
            yield from _settle(settings, window)
            window = []
        if rate:
            ahead = sent / rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
    yield from _settle(settings, window)


def _settle(settings: Settings, window: list[futures.Future]) -> Iterator[str]:
    for future in window:
        try:
            yield future.result(timeout=60)
        except Exception as error:  # the client's errors vary by transport
            raise PubSubError(f"Pub/Sub at {_where(settings)} did not take a message: "
                              f"{error!r}") from None  # fmt: skip


class PubSubReader:
    """Pulls and acknowledges the stream's subscription (one client for both)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = subscriber(settings)
        self.subscription = subscription_path(settings)
        self.read = 0

    def fetch(self, shard: int, batch: int, timeout: float) -> list[Delivery]:
        """Up to ``batch`` messages not acked yet (waits up to ``timeout`` s for the first):
        pulls as long as they bring messages, for up to :data:`READ_SECONDS`, so that one
        read (one bronze write) is not one pull's worth (the emulator gives 100 at most)."""
        deliveries: list[Delivery] = []
        began = time.monotonic()
        while len(deliveries) < batch and time.monotonic() - began < READ_SECONDS:
            pulled = self._pull(min(batch - len(deliveries), MAX_PULL), timeout)
            if not pulled:
                break
            deliveries += pulled
        return deliveries

    def _pull(self, count: int, timeout: float) -> list[Delivery]:
        try:
            response = self.client.pull(
                subscription=self.subscription,
                max_messages=count,
                timeout=max(timeout, PULL_SECONDS),
            )
        except (google.DeadlineExceeded, google.ServiceUnavailable, google.RetryError):
            return []
        deliveries = []
        for received in response.received_messages:
            deliveries.append(Delivery(
                position=self.read, payload=received.message.data, token=received.ack_id,
                origin=f"pubsub:{self.settings.telemetry_topic}:{received.message.message_id}",
            ))  # fmt: skip
            self.read += 1
        return deliveries

    def ack(self, tokens: Iterable[str]) -> None:
        tokens = list(tokens)
        for at in range(0, len(tokens), ACK_CHUNK):
            self.client.acknowledge(
                subscription=self.subscription, ack_ids=tokens[at : at + ACK_CHUNK], timeout=60
            )

    def backlog(self, shard: int) -> int | None:
        """Unknown: the emulator has no backlog metrics (Cloud Monitoring has them)."""
        return None

    def last_sequence(self) -> int | None:
        return None

    def close(self) -> None:
        self.client.close()
