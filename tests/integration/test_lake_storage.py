"""The lake on S3 and on HDFS: the batch path (ingest, reprocess through Dagster, query) and
concurrent writers, against the local S3-compatible server (``betlake local start s3``) and
the local HDFS minicluster (``betlake local start hdfs``).

The batch-path tests are the local-folder ones of test_dagster and test_concurrent_writers,
collected again here with ``settings`` pointing at a lake of this test's own on each store
(exported, as ``eval "$(betlake local env s3)"`` would, so the Dagster resource and the CLI
see it too).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow as pa
import pytest
from botocore.exceptions import ClientError

from betlake.core.config import Settings
from betlake.core.contract import TELEMETRY_RAW
from betlake.core.lake import Lake
from betlake.local import hdfs, s3
from tests.conftest import write_reference_csv
from tests.integration import test_concurrent_writers, test_dagster
from tests.integration.test_site_window_stats import ingest_scenario

pytestmark = pytest.mark.integration

# The batch path and the two concurrent writers, on S3 (see the module docstring).
test_partition_range_run_of_a_day_replaces_exactly_that_day = (
    test_dagster.test_partition_range_run_of_a_day_replaces_exactly_that_day
)
test_stream_and_reprocess_writers_on_the_same_windows = (
    test_concurrent_writers.test_stream_and_reprocess_writers_on_the_same_windows
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The local S3 server for the session, on a free port, in a temporary home."""
    home = tmp_path_factory.mktemp("s3")
    endpoint = f"http://127.0.0.1:{_free_port()}"
    s3.start(Settings.from_env({"BETLAKE_S3_ENDPOINT": endpoint}), home=home, timeout=120)
    try:
        yield endpoint
    finally:
        s3.daemon(home).stop()


@pytest.fixture(scope="session")
def hdfs_namenode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The local HDFS for the session, its namenode on a free port, in a temporary home."""
    home = tmp_path_factory.mktemp("hdfs")
    namenode = f"hdfs://127.0.0.1:{_free_port()}"
    hdfs.start(Settings.from_env({"BETLAKE_LAKE": f"{namenode}/lake"}), home=home, timeout=300)
    try:
        yield namenode
    finally:
        hdfs.daemon(home).stop()


@pytest.fixture(params=["s3", "hdfs"])
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request) -> Settings:
    """Settings with a lake of this test's own on the local S3 server (a bucket) or HDFS (a
    folder), exported."""
    name = request.node.name.lower().replace("_", "-").replace("[", "-")[:40].strip("-]")
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        given = Settings.from_env(
            {"BETLAKE_LAKE": f"s3://{name}/lake", "BETLAKE_S3_ENDPOINT": endpoint}
        )
        s3.create_bucket(endpoint, s3.bucket(given))
        env = s3.env(given)
    else:
        namenode = request.getfixturevalue("hdfs_namenode")
        env = hdfs.env(Settings.from_env({"BETLAKE_LAKE": f"{namenode}/{name}/lake"}))
    env |= {"BETLAKE_REFERENCE": str(write_reference_csv(tmp_path / "reference"))}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings.from_env(env)


@pytest.fixture
def batch_settings(settings: Settings) -> Settings:
    """The local batch runner only: the runners are compared on the local folder (test_dagster),
    the stores here."""
    return settings


@pytest.mark.parametrize("settings", ["s3"], indirect=True)
def test_reprocess_and_query_commands_end_to_end(settings: Settings, tmp_path: Path) -> None:
    """The commands, each a process of its own, on S3 (on HDFS the in-process tests cover the
    same path: the command-line run costs minutes on a loaded machine)."""
    test_dagster.test_reprocess_and_query_commands_end_to_end(settings, tmp_path)


@pytest.mark.parametrize("settings", ["s3"], indirect=True)
def test_local_env_points_the_lake_at_the_server(settings: Settings, s3_endpoint: str) -> None:
    assert settings.lake.startswith("s3://") and settings.s3_endpoint == s3_endpoint
    options = Lake.of(settings).storage_options
    assert options["aws_endpoint_url"] == s3_endpoint
    assert options["aws_conditional_put"] == "etag"
    assert not any("unsafe" in key for key in options)


@pytest.mark.parametrize("settings", ["s3"], indirect=True)
def test_the_store_refuses_to_overwrite_a_commit(settings: Settings, s3_endpoint: str) -> None:
    """delta-rs commits version N by putting its log entry only if absent: the server must
    answer 412 to a second put of an existing entry, or racing writers could both win."""
    lake = Lake.of(settings)
    lake.ensure(TELEMETRY_RAW)
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
    )
    entry = {
        "Bucket": s3.bucket(settings),
        "Key": "lake/telemetry_raw/_delta_log/00000000000000000000.json",
    }
    with pytest.raises(ClientError) as refused:
        client.put_object(**entry, Body=b"{}", IfNoneMatch="*")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    client.put_object(**entry | {"Key": entry["Key"] + ".new"}, Body=b"{}", IfNoneMatch="*")
    assert lake.open(TELEMETRY_RAW.name).version() == 0  # the table is untouched


def test_two_writers_appending_at_once_lose_no_commit(settings: Settings, tmp_path: Path) -> None:
    """Two writers append to one table at the same moment: every row of each lands, and the
    log has one version per append (a lost race would drop one writer's commit)."""
    lake = Lake.of(settings)
    ingest_scenario(settings, tmp_path)  # real rows to copy
    stored = lake.scan(TELEMETRY_RAW)
    before = lake.open(TELEMETRY_RAW.name).version()
    event_id = stored.schema.get_field_index("event_id")
    rounds, start, errors = 6, threading.Barrier(2), []

    def writer(name: str) -> None:
        try:
            start.wait()
            for round_ in range(rounds):
                ids = [f"{name}-{round_}-{i}" for i in range(stored.num_rows)]
                lake.append(TELEMETRY_RAW, stored.set_column(event_id, "event_id", pa.array(ids)))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    assert errors == []
    after = lake.scan(TELEMETRY_RAW, ["event_id"]).column("event_id").to_pylist()
    for name in ("a", "b"):
        mine = {event_id for event_id in after if event_id.startswith(f"{name}-")}
        assert len(mine) == rounds * stored.num_rows
    assert lake.open(TELEMETRY_RAW.name).version() == before + 2 * rounds
    # DuckDB over the store sees the same: the scenario's rows plus each writer's copies
    (count,) = lake.connect().execute("SELECT count(*) FROM telemetry_raw").fetchone()
    assert count == stored.num_rows * (1 + 2 * rounds)
