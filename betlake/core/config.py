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
        return settings

    def with_lake(self, root: str) -> Settings:
        """These settings with another lake root (a local path is made absolute)."""
        return replace(self, lake=_lake_uri(root))


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


def _seconds(env: Mapping[str, str], name: str, default: int, *, zero_ok: bool = False) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0 or (value == 0 and not zero_ok):
        kind = "a non-negative" if zero_ok else "a positive"
        raise ConfigError(f"{name} must be {kind} whole number of seconds, got {raw!r}")
    return value


def _date(env: Mapping[str, str], name: str, default: datetime) -> datetime:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ConfigError(f"{name} must be a date YYYY-MM-DD, got {raw!r}") from None
