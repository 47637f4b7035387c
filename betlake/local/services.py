"""Every local stand-in behind one command: ``betlake local start|stop|status|env SERVICE``.

A service binds 127.0.0.1, keeps its data under ``.betlake/<name>``, says where it listens, and
gives the environment that points betlake at it (``eval "$(betlake local env SERVICE)"``).
"""

from __future__ import annotations

from typing import Protocol

from betlake.core.config import Settings
from betlake.local import broker
from betlake.local.bigquery import BigQueryService
from betlake.local.dagster_ui import DagsterUIService
from betlake.local.dask import DaskService
from betlake.local.hdfs import HdfsService
from betlake.local.nats import NatsService
from betlake.local.pubsub import PubSubService
from betlake.local.s3 import S3Service


class LocalService(Protocol):
    """A local stand-in for one platform component."""

    name: str
    summary: str

    def start(self, settings: Settings) -> str:
        """Start it (idempotent); one line: where it listens."""
        ...

    def stop(self, settings: Settings) -> bool:
        """Stop it; whether it was running."""
        ...

    def status(self, settings: Settings) -> str:
        """One line: running (where it listens) or stopped."""
        ...

    def env(self, settings: Settings) -> dict[str, str]:
        """The environment variables that point betlake at it."""
        ...


class KafkaService:
    """The single-node Kafka broker (KRaft) of :mod:`betlake.local.broker`."""

    name = "kafka"
    summary = "Apache Kafka broker (KRaft, jars from Maven Central)"

    def start(self, settings: Settings) -> str:
        pid = broker.start(settings.kafka_bootstrap)
        return f"kafka running on {settings.kafka_bootstrap} (pid {pid})"

    def stop(self, settings: Settings) -> bool:
        return broker.stop()

    def status(self, settings: Settings) -> str:
        return f"kafka {broker.status()}"

    def env(self, settings: Settings) -> dict[str, str]:
        return {"BETLAKE_SOURCE": "kafka", "BETLAKE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap}


SERVICES: dict[str, LocalService] = {
    service.name: service
    for service in (
        KafkaService(),
        NatsService(),
        PubSubService(),
        S3Service(),
        HdfsService(),
        BigQueryService(),
        DagsterUIService(),
        DaskService(),
    )
}
