"""The delta-rs storage options each kind of lake root gets from the settings (the GCS row is
tested here only: no local GCS emulator takes Delta's conditional writes)."""

from __future__ import annotations

import pytest

from betlake.core.config import Settings
from betlake.core.lake import Lake, storage_options


def test_s3_lake_gets_endpoint_region_credentials_and_conditional_put() -> None:
    settings = Settings.from_env(
        {"BETLAKE_LAKE": "s3://bucket/lake", "BETLAKE_S3_ENDPOINT": "http://127.0.0.1:9000",
         "BETLAKE_S3_REGION": "eu-west-1", "BETLAKE_S3_ACCESS_KEY_ID": "id",
         "BETLAKE_S3_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token"}
    )  # fmt: skip
    assert storage_options(settings) == {
        "aws_endpoint_url": "http://127.0.0.1:9000",
        "aws_allow_http": "true",
        "aws_region": "eu-west-1",
        "aws_access_key_id": "id",
        "aws_secret_access_key": "secret",
        "aws_session_token": "token",
        "aws_conditional_put": "etag",
    }


def test_s3_on_aws_leaves_endpoint_and_credentials_to_the_default_chain() -> None:
    settings = Settings.from_env({"BETLAKE_LAKE": "s3://bucket/lake"})
    assert storage_options(settings) == {"aws_region": "us-east-1", "aws_conditional_put": "etag"}
    https = Settings.from_env({"BETLAKE_LAKE": "s3://b/l", "AWS_ENDPOINT_URL": "https://s3.x"})
    assert "aws_allow_http" not in storage_options(https)


def test_gcs_lake_gets_its_service_account() -> None:
    settings = Settings.from_env(
        {"BETLAKE_LAKE": "gs://bucket/lake", "GOOGLE_APPLICATION_CREDENTIALS": "/keys/sa.json",
         "BETLAKE_S3_ENDPOINT": "http://127.0.0.1:9000"}
    )  # fmt: skip
    assert storage_options(settings) == {"google_service_account": "/keys/sa.json"}
    assert storage_options(Settings.from_env({"BETLAKE_LAKE": "gs://bucket/lake"})) == {}


@pytest.mark.parametrize("root", ["/data/lake", "hdfs://127.0.0.1:9820/lake"])
def test_folder_and_hdfs_lakes_need_no_options(root: str) -> None:
    settings = Settings.from_env({"BETLAKE_LAKE": root, "AWS_ACCESS_KEY_ID": "id"})
    assert storage_options(settings) is None
    assert Lake.of(settings).root == settings.lake.rstrip("/")
