"""NATS JetStream, in one place: the telemetry stream, publishing, pulling and acknowledging.

The telemetry stream is named after ``BETLAKE_TELEMETRY_TOPIC`` and holds the subjects
``<topic>.<n>``, one per shard (``BETLAKE_SOURCE_SHARDS``), each player's messages on one of them
(:func:`shard_of`); it keeps its messages in files and drops a message whose ``Nats-Msg-Id``
(the event_id, where the line has one) it has seen in the last two minutes. The stream reads
each shard with a durable pull consumer (``betlake-stream-<n>``), explicit acks, redelivering
what is not acked within ``BETLAKE_ACK_DEADLINE_SECONDS``.

nats-py is asyncio; :class:`NatsClient` runs its connection on an event loop of its own thread
so that the rest of betlake (Beam DoFns, the CLI) calls it synchronously.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import zlib
from collections.abc import Coroutine, Iterable, Iterator
from contextlib import suppress
from typing import Any, TypeVar

import nats
from nats.errors import Error as NatsClientError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from betlake.core.config import BetlakeError, Settings
from betlake.core.transport import Delivery

T = TypeVar("T")
DUPLICATE_WINDOW_SECONDS = 120  # publishes with a Nats-Msg-Id seen this recently are dropped
PUBLISH_WINDOW = 500  # publishes in flight at once (they stay in order on the connection)


class NatsError(BetlakeError):
    """NATS could not be reached or refused a request."""


def stream_name(settings: Settings) -> str:
    """The JetStream stream of the telemetry topic (a name may not hold '.', '*', '>')."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in settings.telemetry_topic)


def subject(settings: Settings, shard: int) -> str:
    return f"{settings.telemetry_topic}.{shard}"


def durable(shard: int) -> str:
    return f"betlake-stream-{shard}"


def shard_of(key: str | None, shards: int) -> int:
    """The shard of a player's messages (crc32 of the key; shard 0 without a key)."""
    return zlib.crc32(key.encode()) % shards if key else 0


def message_id(line: bytes) -> str | None:
    """The event_id of a JSON line, for ``Nats-Msg-Id`` (None if it has no string one)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    event_id = event.get("event_id") if isinstance(event, dict) else None
    return event_id if isinstance(event_id, str) and event_id else None


class NatsClient:
    """A synchronous face of one NATS connection (closed by :meth:`close`)."""

    def __init__(self, settings: Settings, timeout: float = 10) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="nats")
        self.thread.start()
        try:
            self.connection = self.run(
                nats.connect(
                    settings.nats_url,
                    connect_timeout=timeout,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                ),
                timeout + 5,
            )
        except (OSError, NatsClientError, TimeoutError) as error:
            self._stop_loop()
            raise NatsError(f"NATS at {settings.nats_url} does not answer ({error!r})") from None
        self.js = self.connection.jetstream()
        self.pulls: dict[int, Any] = {}

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        with suppress(Exception):  # closing a connection that is gone
            self.run(self.connection.close(), 10)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    # ---------------------------------------------------------------- the stream

    def ensure_stream(self) -> list[int]:
        """Create the telemetry stream and one durable consumer per shard if missing; returns
        the shards."""
        settings, name = self.settings, stream_name(self.settings)
        shards = list(range(settings.source_shards))

        async def ensure() -> None:
            try:
                await self.js.stream_info(name)
            except NotFoundError:
                await self.js.add_stream(StreamConfig(
                    name=name, subjects=[f"{settings.telemetry_topic}.*"],
                    storage=StorageType.FILE, duplicate_window=DUPLICATE_WINDOW_SECONDS,
                ))  # fmt: skip
            for shard in shards:
                try:
                    await self.js.consumer_info(name, durable(shard))
                except NotFoundError:
                    await self.js.add_consumer(name, ConsumerConfig(
                        durable_name=durable(shard), filter_subject=subject(settings, shard),
                        ack_policy=AckPolicy.EXPLICIT, ack_wait=settings.ack_deadline_seconds,
                        max_ack_pending=100_000, max_deliver=-1,
                    ))  # fmt: skip

        try:
            self.run(ensure())
        except NatsClientError as error:
            raise NatsError(
                f"cannot create stream {name} at {settings.nats_url}: {error}"
            ) from None
        return shards

    def publish(
        self, messages: Iterable[tuple[str | None, bytes]], rate: float | None = None
    ) -> Iterator[tuple[int, int, str | None]]:
        """Publish (key, payload) messages in order, at most ``rate`` a second, each to its
        key's shard with ``Nats-Msg-Id`` = its event_id; yields (shard, stream sequence,
        message id) per message once stored (sequence 0: dropped as a duplicate)."""
        shards, began, window = self.settings.source_shards, time.monotonic(), []
        for sent, (key, payload) in enumerate(messages, 1):
            shard, msg_id = shard_of(key, shards), message_id(payload)
            headers = {"Nats-Msg-Id": msg_id} if msg_id else None
            window.append((shard, msg_id, self._publish(subject(self.settings, shard), payload,
                                                        headers)))  # fmt: skip
            if len(window) >= PUBLISH_WINDOW or rate:
                yield from self._settle(window)
                window = []
            if rate:
                ahead = sent / rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
        yield from self._settle(window)

    def _publish(self, to: str, payload: bytes, headers: dict[str, str] | None):
        return asyncio.run_coroutine_threadsafe(
            self.js.publish(to, payload, timeout=30, headers=headers), self.loop
        )

    @staticmethod
    def _settle(window: list) -> Iterator[tuple[int, int, str | None]]:
        for shard, msg_id, future in window:
            try:
                ack = future.result(60)
            except NatsClientError as error:
                raise NatsError(f"NATS did not store a message: {error!r}") from None
            yield shard, 0 if ack.duplicate else ack.seq, msg_id

    def last_sequence(self) -> int | None:
        """The stream's last sequence (None while NATS does not answer)."""
        try:
            return self.run(self.js.stream_info(stream_name(self.settings)), 10).state.last_seq
        except (NatsClientError, TimeoutError):
            return None

    # ---------------------------------------------------------------- the consumers

    def fetch(self, shard: int, batch: int, timeout: float) -> list[Delivery]:
        """Up to ``batch`` messages of ``shard`` not acked yet (waits up to ``timeout`` s)."""
        stream = stream_name(self.settings)

        async def fetch() -> list:
            pull = self.pulls.get(shard)
            if pull is None:
                pull = self.pulls[shard] = await self.js.pull_subscribe_bind(
                    durable(shard), stream=stream
                )
            try:
                return await pull.fetch(batch, timeout=timeout)
            except NatsTimeout:
                return []

        try:
            messages = self.run(fetch(), timeout + 30)
        except (NatsClientError, TimeoutError):
            return []  # NATS is away: the connection reconnects, the next fetch tries again
        return [
            Delivery(
                position=m.metadata.sequence.stream,
                payload=m.data,
                token=m.reply,
                origin=f"nats:{stream}:{m.metadata.sequence.stream}",
            )
            for m in messages
        ]

    def ack(self, tokens: Iterable[str]) -> None:
        """Acknowledge delivered messages by their ack subjects (from any connection)."""

        async def ack() -> None:
            for token in tokens:
                await self.connection.publish(token, b"+ACK")
            await self.connection.flush(timeout=30)

        self.run(ack())

    def backlog(self, shard: int) -> int | None:
        """Messages of ``shard`` not acked yet, delivered or not (None: NATS does not answer)."""
        try:
            info = self.run(self.js.consumer_info(stream_name(self.settings), durable(shard)), 10)
        except (NatsClientError, TimeoutError):
            return None
        return info.num_pending + info.num_ack_pending
