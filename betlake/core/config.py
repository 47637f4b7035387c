"""Typed settings from the contract's ``BETLAKE_*`` environment variables, in one place.

:meth:`Settings.from_env` is the one reader of the environment; everything else takes a
:class:`Settings`.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path


class BetlakeError(Exception):
    """An error the user can act on: the command line prints its message as one line."""


class ConfigError(BetlakeError):
    """A configuration value is invalid."""


_KAFKA_OPTION_PREFIX = "BETLAKE_KAFKA_OPT_"
RUNNERS = ("local", "dask", "flink", "dataflow")  # BETLAKE_RUNNER: where Beam pipelines run
LAKE_SCHEMES = ("file", "s3", "gs", "hdfs")  # BETLAKE_LAKE: a folder, or an object store URI
SOURCES = ("kafka", "nats", "pubsub")  # BETLAKE_SOURCE: the stream's transport


def _default_cache() -> Path:
    return Path.home() / ".cache" / "betlake"


def _lake_uri(root: str) -> str:
    """A lake root as given, made absolute if it is a local path."""
    return root if "://" in root else str(Path(root).resolve())


@dataclass(frozen=True)
class Settings:
    """Everything betlake reads from the environment, with defaults that work on one machine."""

    lake: str = "./lake"
    reference: Path = Path("data/reference")
    kafka_bootstrap: str = "127.0.0.1:9092"
    telemetry_topic: str = "player-telemetry"
    stats_topic: str = "bet-site-stats"
    window_seconds: int = 300
    allowed_lateness_seconds: int = 900
    max_out_of_orderness_seconds: int = 30
    idle_timeout_seconds: int = 30
    max_clock_skew_seconds: int = 300
    partitions_start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    kafka_options: Mapping[str, str] = field(default_factory=dict)
    runner: str = "local"
    pipeline_args: tuple[str, ...] = ()  # extra Beam options (BETLAKE_PIPELINE_ARGS, shell words)
    dask_scheduler: str | None = None  # runner dask: tcp://host:port; unset: a LocalCluster
    cache: Path = field(default_factory=_default_cache)  # fetched tools: Kafka jars, Prism
    dagster_home: Path = Path("dagster_home")  # DAGSTER_HOME, made absolute by from_env
    bigquery_endpoint: str | None = None  # unset: Google BigQuery
    bigquery_project: str | None = None  # unset: the credentials' (or the emulator's) project
    bigquery_dataset: str = "betlake"
    backfill_cron: str = "30 0 * * *"  # the nightly recomputation of yesterday
    reference_cron: str = "0 5 * * *"  # the reference data reload
    maintain_cron: str = "0 3 * * *"  # the lake's compaction and vacuum
    s3_endpoint: str | None = None  # an S3-compatible server's URL; unset: AWS S3
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None  # unset: delta-rs's own chain (profile, instance role)
    s3_secret_access_key: str | None = None
    s3_session_token: str | None = None
    gcs_credentials: str | None = None  # a service account key file; unset: the default chain
    source: str = "kafka"  # the stream's transport (SOURCES)
    source_shards: int = 4  # NATS: subjects <topic>.<n> keyed by player, one reader each
    ack_deadline_seconds: int = 60  # NATS ack wait, Pub/Sub ack deadline: then redelivered
    nats_url: str = "nats://127.0.0.1:4222"
    pubsub_emulator_host: str | None = None  # PUBSUB_EMULATOR_HOST; unset: Google Pub/Sub
    pubsub_project: str = "betlake-local"
    dagster_reporting: bool = True  # the stream reports its gold writes to the Dagster instance
    dagster_url: str = "http://127.0.0.1:3000"  # the Dagster UI, for links to runs
    bronze_freshness_seconds: int = 600  # telemetry_raw's freshness check warns after this

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings; a bad value raises :class:`ConfigError` naming the variable."""
        env = os.environ if env is None else env
        settings = cls(
            lake=_lake_uri(env.get("BETLAKE_LAKE", cls.lake)),
            reference=Path(env.get("BETLAKE_REFERENCE", str(cls.reference))),
            kafka_bootstrap=env.get("BETLAKE_KAFKA_BOOTSTRAP", cls.kafka_bootstrap),
            telemetry_topic=env.get("BETLAKE_TELEMETRY_TOPIC", cls.telemetry_topic),
            stats_topic=env.get("BETLAKE_STATS_TOPIC", cls.stats_topic),
            window_seconds=_seconds(env, "BETLAKE_WINDOW_SECONDS", cls.window_seconds),
            allowed_lateness_seconds=_seconds(
                env, "BETLAKE_ALLOWED_LATENESS_SECONDS", cls.allowed_lateness_seconds, zero_ok=True
            ),
            max_out_of_orderness_seconds=_seconds(
                env,
                "BETLAKE_MAX_OUT_OF_ORDERNESS_SECONDS",
                cls.max_out_of_orderness_seconds,
                zero_ok=True,
            ),
            idle_timeout_seconds=_seconds(
                env, "BETLAKE_IDLE_TIMEOUT_SECONDS", cls.idle_timeout_seconds
            ),
            max_clock_skew_seconds=_seconds(
                env, "BETLAKE_MAX_CLOCK_SKEW_SECONDS", cls.max_clock_skew_seconds, zero_ok=True
            ),
            partitions_start=_date(env, "BETLAKE_PARTITIONS_START", cls.partitions_start),
            kafka_options={
                key[len(_KAFKA_OPTION_PREFIX) :].lower().replace("_", "."): value
                for key, value in env.items()
                if key.startswith(_KAFKA_OPTION_PREFIX)
            },
            runner=env.get("BETLAKE_RUNNER", cls.runner),
            pipeline_args=_words(env, "BETLAKE_PIPELINE_ARGS"),
            dask_scheduler=_address(env, "BETLAKE_DASK_SCHEDULER"),
            cache=Path(env.get("BETLAKE_CACHE") or _default_cache()).expanduser(),
            dagster_home=Path(env.get("DAGSTER_HOME", str(cls.dagster_home))).resolve(),
            bigquery_endpoint=env.get("BETLAKE_BIGQUERY_ENDPOINT") or None,
            bigquery_project=env.get("BETLAKE_BIGQUERY_PROJECT") or None,
            bigquery_dataset=env.get("BETLAKE_BIGQUERY_DATASET") or cls.bigquery_dataset,
            backfill_cron=env.get("BETLAKE_BACKFILL_CRON", cls.backfill_cron),
            reference_cron=env.get("BETLAKE_REFERENCE_CRON", cls.reference_cron),
            maintain_cron=env.get("BETLAKE_MAINTAIN_CRON", cls.maintain_cron),
            s3_endpoint=_first(
                env, "BETLAKE_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"
            ),
            s3_region=_first(env, "BETLAKE_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
            or cls.s3_region,
            s3_access_key_id=_first(env, "BETLAKE_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
            s3_secret_access_key=_first(
                env, "BETLAKE_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"
            ),
            s3_session_token=_first(env, "BETLAKE_S3_SESSION_TOKEN", "AWS_SESSION_TOKEN"),
            gcs_credentials=_first(
                env, "BETLAKE_GCS_CREDENTIALS", "GOOGLE_APPLICATION_CREDENTIALS"
            ),
            source=env.get("BETLAKE_SOURCE", cls.source),
            source_shards=_seconds(env, "BETLAKE_SOURCE_SHARDS", cls.source_shards, unit="shards"),
            ack_deadline_seconds=_seconds(
                env, "BETLAKE_ACK_DEADLINE_SECONDS", cls.ack_deadline_seconds
            ),
            nats_url=env.get("BETLAKE_NATS_URL", cls.nats_url),
            pubsub_emulator_host=env.get("PUBSUB_EMULATOR_HOST") or None,
            pubsub_project=env.get("BETLAKE_PUBSUB_PROJECT") or cls.pubsub_project,
            dagster_reporting=_switch(env, "BETLAKE_DAGSTER_REPORTING", cls.dagster_reporting),
            dagster_url=env.get("BETLAKE_DAGSTER_URL", cls.dagster_url).rstrip("/"),
            bronze_freshness_seconds=_seconds(
                env, "BETLAKE_BRONZE_FRESHNESS_SECONDS", cls.bronze_freshness_seconds
            ),
        )
        if settings.source not in SOURCES:
            raise ConfigError(
                f"BETLAKE_SOURCE must be one of {', '.join(SOURCES)}, got {settings.source!r}"
            )
        if not 10 <= settings.ack_deadline_seconds <= 600:
            raise ConfigError(
                "BETLAKE_ACK_DEADLINE_SECONDS must be between 10 and 600 (Pub/Sub's limits), "
                f"got {settings.ack_deadline_seconds}"
            )
        if settings.runner not in RUNNERS:
            raise ConfigError(
                f"BETLAKE_RUNNER must be one of {', '.join(RUNNERS)}, got {settings.runner!r}"
            )
        if settings.window_seconds % 60 or 3600 % settings.window_seconds:
            raise ConfigError(
                "BETLAKE_WINDOW_SECONDS must be a whole number of minutes that divides an hour "
                f"(60, 120, 300, 600, ...), got {settings.window_seconds}"
            )
        scheme = settings.lake.partition("://")[0] if "://" in settings.lake else "file"
        if scheme not in LAKE_SCHEMES:
            raise ConfigError(
                f"BETLAKE_LAKE must be a folder or a {', '.join(LAKE_SCHEMES[1:])}:// URI, "
                f"got {settings.lake!r}"
            )
        if settings.s3_endpoint is not None and "://" not in settings.s3_endpoint:
            raise ConfigError(
                "BETLAKE_S3_ENDPOINT must be a URL (http://host:port), "
                f"got {settings.s3_endpoint!r}"
            )
        return settings

    def with_lake(self, root: str) -> Settings:
        """These settings with another lake root (a local path is made absolute)."""
        return replace(self, lake=_lake_uri(root))


def _first(env: Mapping[str, str], *names: str) -> str | None:
    """The first of ``names`` set to a non-empty value (a betlake setting before its standard
    fallbacks), or None."""
    return next((env[name] for name in names if env.get(name)), None)


def _words(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name, "")
    try:
        return tuple(shlex.split(raw))
    except ValueError as error:
        raise ConfigError(f"{name} must be shell words ({error}), got {raw!r}") from None


def _address(env: Mapping[str, str], name: str) -> str | None:
    """A scheduler address ``tcp://host:port`` (``host:port`` is taken as tcp), or None."""
    raw = env.get(name) or None
    if raw is None:
        return None
    address = raw if "://" in raw else f"tcp://{raw}"
    scheme, _, rest = address.partition("://")
    host, sep, port = rest.rpartition(":")
    if scheme not in ("tcp", "tls") or not sep or not host or not port.isdigit():
        raise ConfigError(f"{name} must be an address tcp://host:port, got {raw!r}")
    return address


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    if raw.lower() in ("on", "1", "true", "yes"):
        return True
    if raw.lower() in ("off", "0", "false", "no"):
        return False
    raise ConfigError(f"{name} must be on or off, got {raw!r}")


def _seconds(
    env: Mapping[str, str], name: str, default: int, *, zero_ok: bool = False, unit: str = "seconds"
) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0 or (value == 0 and not zero_ok):
        kind = "a non-negative" if zero_ok else "a positive"
        raise ConfigError(f"{name} must be {kind} whole number of {unit}, got {raw!r}")
    return value


def _date(env: Mapping[str, str], name: str, default: datetime) -> datetime:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ConfigError(f"{name} must be a date YYYY-MM-DD, got {raw!r}") from None
