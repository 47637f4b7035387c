"""Unit tests of :class:`betlake.core.config.Settings` read from ``BETLAKE_*`` variables."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from betlake.core.config import BetlakeError, ConfigError, Settings


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("BETLAKE_"):
            monkeypatch.delenv(name)


def test_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env({})
    assert settings.lake == str(tmp_path.resolve() / "lake")
    assert settings.reference == Path("data/reference")
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.telemetry_topic == "player-telemetry"
    assert settings.stats_topic == "bet-site-stats"
    assert settings.window_seconds == 300
    assert settings.allowed_lateness_seconds == 900
    assert settings.max_out_of_orderness_seconds == 30
    assert settings.idle_timeout_seconds == 30
    assert settings.max_clock_skew_seconds == 300
    assert settings.partitions_start == datetime(2026, 1, 1, tzinfo=UTC)
    assert dict(settings.kafka_options) == {}
    assert (settings.runner, settings.pipeline_args) == ("local", ())
    assert settings.cache == Path.home() / ".cache" / "betlake"
    assert settings.dagster_home == tmp_path.resolve() / "dagster_home"
    assert (settings.bigquery_endpoint, settings.bigquery_project) == (None, None)
    assert settings.bigquery_dataset == "betlake"
    assert (settings.backfill_cron, settings.reference_cron) == ("30 0 * * *", "0 5 * * *")


def test_unrelated_variables_ignored(tmp_path: Path) -> None:
    settings = Settings.from_env({"PATH": "/bin", "KAFKA_OPT_X": "1", "BETLAKE_UNKNOWN": "z"})
    assert settings == Settings.from_env({})


def test_reads_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BETLAKE_WINDOW_SECONDS", "600")
    monkeypatch.setenv("BETLAKE_STATS_TOPIC", "stats-from-env")
    settings = Settings.from_env()
    assert settings.window_seconds == 600
    assert settings.stats_topic == "stats-from-env"


@pytest.mark.parametrize(
    ("name", "value", "attribute", "expected"),
    [
        ("BETLAKE_LAKE", "gs://bucket/lake", "lake", "gs://bucket/lake"),
        ("BETLAKE_LAKE", "s3://bucket/some/lake", "lake", "s3://bucket/some/lake"),
        ("BETLAKE_LAKE", "/data/lake", "lake", str(Path("/data/lake").resolve())),
        ("BETLAKE_REFERENCE", "/ref/dir", "reference", Path("/ref/dir")),
        ("BETLAKE_REFERENCE", "ref", "reference", Path("ref")),
        (
            "BETLAKE_KAFKA_BOOTSTRAP",
            "broker-1:9093,broker-2:9093",
            "kafka_bootstrap",
            "broker-1:9093,broker-2:9093",
        ),
        ("BETLAKE_TELEMETRY_TOPIC", "telemetry-x", "telemetry_topic", "telemetry-x"),
        ("BETLAKE_STATS_TOPIC", "stats-x", "stats_topic", "stats-x"),
        ("BETLAKE_WINDOW_SECONDS", "60", "window_seconds", 60),
        ("BETLAKE_WINDOW_SECONDS", "600", "window_seconds", 600),
        ("BETLAKE_WINDOW_SECONDS", "3600", "window_seconds", 3600),
        ("BETLAKE_ALLOWED_LATENESS_SECONDS", "120", "allowed_lateness_seconds", 120),
        ("BETLAKE_ALLOWED_LATENESS_SECONDS", "0", "allowed_lateness_seconds", 0),
        ("BETLAKE_MAX_OUT_OF_ORDERNESS_SECONDS", "5", "max_out_of_orderness_seconds", 5),
        ("BETLAKE_MAX_OUT_OF_ORDERNESS_SECONDS", "0", "max_out_of_orderness_seconds", 0),
        ("BETLAKE_IDLE_TIMEOUT_SECONDS", "45", "idle_timeout_seconds", 45),
        ("BETLAKE_MAX_CLOCK_SKEW_SECONDS", "60", "max_clock_skew_seconds", 60),
        ("BETLAKE_MAX_CLOCK_SKEW_SECONDS", "0", "max_clock_skew_seconds", 0),
        (
            "BETLAKE_PARTITIONS_START",
            "2025-06-30",
            "partitions_start",
            datetime(2025, 6, 30, tzinfo=UTC),
        ),
        ("BETLAKE_RUNNER", "flink", "runner", "flink"),
        ("BETLAKE_RUNNER", "dataflow", "runner", "dataflow"),
        ("BETLAKE_RUNNER", "dask", "runner", "dask"),
        ("BETLAKE_DASK_SCHEDULER", "tcp://10.0.0.5:8786", "dask_scheduler", "tcp://10.0.0.5:8786"),
        ("BETLAKE_DASK_SCHEDULER", "dask-host:8786", "dask_scheduler", "tcp://dask-host:8786"),
        (
            "BETLAKE_PIPELINE_ARGS",
            "--flink_master=host:8081 --job_name='a b'",
            "pipeline_args",
            ("--flink_master=host:8081", "--job_name=a b"),
        ),
        ("BETLAKE_CACHE", "/var/cache/betlake", "cache", Path("/var/cache/betlake")),
        ("DAGSTER_HOME", "/srv/dagster", "dagster_home", Path("/srv/dagster")),
        (
            "BETLAKE_BIGQUERY_ENDPOINT",
            "http://127.0.0.1:9050",
            "bigquery_endpoint",
            "http://127.0.0.1:9050",
        ),
        ("BETLAKE_BIGQUERY_PROJECT", "my-project", "bigquery_project", "my-project"),
        ("BETLAKE_BIGQUERY_DATASET", "gold", "bigquery_dataset", "gold"),
        ("BETLAKE_BACKFILL_CRON", "15 2 * * *", "backfill_cron", "15 2 * * *"),
        ("BETLAKE_REFERENCE_CRON", "0 6 * * 1", "reference_cron", "0 6 * * 1"),
        ("BETLAKE_MAINTAIN_CRON", "0 4 * * 0", "maintain_cron", "0 4 * * 0"),
        ("BETLAKE_LAKE", "hdfs://127.0.0.1:9820/lake", "lake", "hdfs://127.0.0.1:9820/lake"),
        ("BETLAKE_S3_ENDPOINT", "http://127.0.0.1:9000", "s3_endpoint", "http://127.0.0.1:9000"),
        ("AWS_ENDPOINT_URL", "https://s3.example", "s3_endpoint", "https://s3.example"),
        ("AWS_ENDPOINT_URL_S3", "https://s3.example", "s3_endpoint", "https://s3.example"),
        ("BETLAKE_S3_REGION", "eu-west-1", "s3_region", "eu-west-1"),
        ("AWS_REGION", "eu-west-2", "s3_region", "eu-west-2"),
        ("AWS_DEFAULT_REGION", "eu-west-3", "s3_region", "eu-west-3"),
        ("BETLAKE_S3_ACCESS_KEY_ID", "AKID", "s3_access_key_id", "AKID"),
        ("AWS_ACCESS_KEY_ID", "AKID", "s3_access_key_id", "AKID"),
        ("BETLAKE_S3_SECRET_ACCESS_KEY", "sk", "s3_secret_access_key", "sk"),
        ("AWS_SECRET_ACCESS_KEY", "sk", "s3_secret_access_key", "sk"),
        ("BETLAKE_S3_SESSION_TOKEN", "tok", "s3_session_token", "tok"),
        ("AWS_SESSION_TOKEN", "tok", "s3_session_token", "tok"),
        ("BETLAKE_GCS_CREDENTIALS", "/k.json", "gcs_credentials", "/k.json"),
        ("GOOGLE_APPLICATION_CREDENTIALS", "/k.json", "gcs_credentials", "/k.json"),
        ("BETLAKE_SOURCE", "nats", "source", "nats"),
        ("BETLAKE_SOURCE", "pubsub", "source", "pubsub"),
        ("BETLAKE_SOURCE_SHARDS", "8", "source_shards", 8),
        ("BETLAKE_ACK_DEADLINE_SECONDS", "600", "ack_deadline_seconds", 600),
        ("BETLAKE_NATS_URL", "nats://10.0.0.5:4333", "nats_url", "nats://10.0.0.5:4333"),
        ("PUBSUB_EMULATOR_HOST", "127.0.0.1:8681", "pubsub_emulator_host", "127.0.0.1:8681"),
        ("BETLAKE_PUBSUB_PROJECT", "my-gcp", "pubsub_project", "my-gcp"),
        ("BETLAKE_DAGSTER_REPORTING", "off", "dagster_reporting", False),
        ("BETLAKE_DAGSTER_URL", "http://ops:3000/", "dagster_url", "http://ops:3000"),
        ("BETLAKE_BRONZE_FRESHNESS_SECONDS", "120", "bronze_freshness_seconds", 120),
    ],
)
def test_each_variable_read(name: str, value: str, attribute: str, expected: object) -> None:
    settings = Settings.from_env({name: value})
    assert getattr(settings, attribute) == expected
    # Every other setting keeps its default.
    defaults = Settings.from_env({})
    for other in Settings.__dataclass_fields__:
        if other != attribute:
            assert getattr(settings, other) == getattr(defaults, other), other


def test_relative_lake_is_made_absolute(tmp_path: Path) -> None:
    settings = Settings.from_env({"BETLAKE_LAKE": "some/lake"})
    assert settings.lake == str(tmp_path.resolve() / "some" / "lake")
    assert Path(settings.lake).is_absolute()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        *[
            (name, bad)
            for name in (
                "BETLAKE_WINDOW_SECONDS",
                "BETLAKE_ALLOWED_LATENESS_SECONDS",
                "BETLAKE_MAX_OUT_OF_ORDERNESS_SECONDS",
                "BETLAKE_IDLE_TIMEOUT_SECONDS",
                "BETLAKE_MAX_CLOCK_SKEW_SECONDS",
                "BETLAKE_BRONZE_FRESHNESS_SECONDS",
            )
            for bad in ("abc", "-1", "-300", "1.5", "", "5m", "300\nx")
        ],
        ("BETLAKE_WINDOW_SECONDS", "0"),
        ("BETLAKE_WINDOW_SECONDS", "420"),  # 7 minutes: does not divide an hour
        ("BETLAKE_WINDOW_SECONDS", "30"),  # not whole minutes
        ("BETLAKE_WINDOW_SECONDS", "90"),
        ("BETLAKE_WINDOW_SECONDS", "7200"),
        ("BETLAKE_IDLE_TIMEOUT_SECONDS", "0"),
        ("BETLAKE_PARTITIONS_START", "nonsense"),
        ("BETLAKE_PARTITIONS_START", "2026-13-01"),
        ("BETLAKE_PARTITIONS_START", "2026-02-30"),
        ("BETLAKE_PARTITIONS_START", "2026/01/01"),
        ("BETLAKE_PARTITIONS_START", ""),
        ("BETLAKE_RUNNER", "spark"),
        ("BETLAKE_RUNNER", ""),
        ("BETLAKE_PIPELINE_ARGS", "--job_name='unclosed"),
        ("BETLAKE_LAKE", "ftp://host/lake"),
        ("BETLAKE_LAKE", "s3a://bucket/lake"),
        ("BETLAKE_S3_ENDPOINT", "127.0.0.1:9000"),
        ("BETLAKE_SOURCE", "rabbitmq"),
        ("BETLAKE_SOURCE", ""),
        ("BETLAKE_SOURCE_SHARDS", "0"),
        ("BETLAKE_SOURCE_SHARDS", "two"),
        ("BETLAKE_ACK_DEADLINE_SECONDS", "5"),
        ("BETLAKE_ACK_DEADLINE_SECONDS", "601"),
        ("BETLAKE_DAGSTER_REPORTING", "maybe"),
        ("BETLAKE_DASK_SCHEDULER", "dask-host"),
        ("BETLAKE_DASK_SCHEDULER", "http://dask-host:8786"),
        ("BETLAKE_DASK_SCHEDULER", "tcp://:8786"),
    ],
)
def test_bad_value_raises_config_error(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    message = str(caught.value)
    assert name in message
    assert "\n" not in message
    assert message.strip() == message and message


@pytest.mark.parametrize("value", ["420", "abc", "-5"])
def test_config_error_names_the_value(value: str) -> None:
    with pytest.raises(ConfigError, match="BETLAKE_WINDOW_SECONDS") as caught:
        Settings.from_env({"BETLAKE_WINDOW_SECONDS": value})
    assert value in str(caught.value)


def test_config_error_is_a_betlake_error() -> None:
    assert issubclass(ConfigError, BetlakeError)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"BETLAKE_KAFKA_OPT_SASL_MECHANISM": "PLAIN"}, {"sasl.mechanism": "PLAIN"}),
        (
            {
                "BETLAKE_KAFKA_OPT_SECURITY_PROTOCOL": "SASL_SSL",
                "BETLAKE_KAFKA_OPT_SASL_USERNAME": "user",
                "BETLAKE_KAFKA_OPT_SASL_PASSWORD": "p@ss_word",
                "BETLAKE_KAFKA_OPT_SSL_CA_LOCATION": "/etc/ssl/ca.pem",
                "BETLAKE_WINDOW_SECONDS": "300",
            },
            {
                "security.protocol": "SASL_SSL",
                "sasl.username": "user",
                "sasl.password": "p@ss_word",
                "ssl.ca.location": "/etc/ssl/ca.pem",
            },
        ),
        ({"KAFKA_OPT_SASL_MECHANISM": "PLAIN"}, {}),
    ],
)
def test_kafka_options_pass_through(env: dict[str, str], expected: dict[str, str]) -> None:
    assert dict(Settings.from_env(env).kafka_options) == expected


def test_betlake_settings_win_over_the_standard_variables() -> None:
    settings = Settings.from_env(
        {"BETLAKE_S3_REGION": "eu-west-1", "AWS_REGION": "us-west-2",
         "BETLAKE_S3_ACCESS_KEY_ID": "mine", "AWS_ACCESS_KEY_ID": "theirs",
         "BETLAKE_GCS_CREDENTIALS": "/mine.json", "GOOGLE_APPLICATION_CREDENTIALS": "/x.json"}
    )  # fmt: skip
    assert (settings.s3_region, settings.s3_access_key_id) == ("eu-west-1", "mine")
    assert settings.gcs_credentials == "/mine.json"
