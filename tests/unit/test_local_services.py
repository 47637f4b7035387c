"""`betlake local env SERVICE` prints the exports that point betlake at each local stand-in,
and they read back as the settings that reach it."""

from __future__ import annotations

import os
import shlex

import pytest

from betlake.cli import main
from betlake.core.config import Settings
from betlake.core.lake import Lake


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("BETLAKE_", "AWS_", "GOOGLE_")):
            monkeypatch.delenv(name)


def exported(capsys: pytest.CaptureFixture[str], service: str) -> dict[str, str]:
    assert main(["local", "env", service]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(line.startswith("export ") for line in lines), lines
    return dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in lines)


def test_env_s3_puts_the_lake_on_the_local_object_store(capsys) -> None:
    env = exported(capsys, "s3")
    assert env["BETLAKE_LAKE"] == "s3://betlake/lake"
    options = Lake.of(Settings.from_env(env)).storage_options
    assert options["aws_endpoint_url"] == "http://127.0.0.1:9000"
    assert options["aws_allow_http"] == "true" and options["aws_conditional_put"] == "etag"


def test_env_s3_keeps_a_lake_already_on_s3(capsys, monkeypatch) -> None:
    monkeypatch.setenv("BETLAKE_LAKE", "s3://mine/some/lake")
    monkeypatch.setenv("BETLAKE_S3_ENDPOINT", "http://127.0.0.1:9123")
    env = exported(capsys, "s3")
    assert env["BETLAKE_LAKE"] == "s3://mine/some/lake"
    assert env["BETLAKE_S3_ENDPOINT"] == "http://127.0.0.1:9123"


def test_env_hdfs_and_bigquery(capsys) -> None:
    assert exported(capsys, "hdfs") == {"BETLAKE_LAKE": "hdfs://127.0.0.1:9820/lake"}
    assert exported(capsys, "bigquery") == {"BETLAKE_BIGQUERY_ENDPOINT": "http://127.0.0.1:9050"}


@pytest.mark.parametrize("service", ["s3", "hdfs", "bigquery"])
def test_status_of_a_stopped_service(capsys, service: str) -> None:
    assert main(["local", "status", service]) == 0
    assert capsys.readouterr().out.startswith(f"{service} stopped")
