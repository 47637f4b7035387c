"""The stream and the batch pipeline translate for Dataflow, offline: Beam's DataflowRunner
with ``--dry_run`` builds the job and the portable graph it would submit, and
``betlake dataflow-job`` writes them to ``--dataflow_job_file``."""

from __future__ import annotations

import json
import shlex
import sys
from base64 import b64decode
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.portability.api import beam_runner_api_pb2

from betlake.cli import main
from betlake.core.config import Settings
from betlake.core.lake import Lake

pytestmark = pytest.mark.integration

STREAM_STAGES = {"ReadTelemetry", "SplitStoredReads", "SiteWindowStats", "PublishPanes",
                 "HoldCommitsUntilPublished", "CommitOffsets"}  # fmt: skip
BATCH_STAGES = {"Chunks", "ReadRaw", "SiteWindowStats", "AllRows", "ReplaceGold"}


def dataflow_job(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str
) -> dict:
    """Run ``betlake dataflow-job ARGS`` on the test lake; the job file it wrote."""
    job_file = tmp_path / "job.json"
    pipeline_args = [
        "--project=betlake-test", "--region=europe-west1",
        "--temp_location=gs://betlake-test/tmp", f"--dataflow_job_file={job_file}",
    ]  # fmt: skip
    monkeypatch.setenv("BETLAKE_LAKE", settings.lake)
    monkeypatch.setenv("BETLAKE_RUNNER", "dataflow")
    monkeypatch.setenv("BETLAKE_PIPELINE_ARGS", shlex.join(pipeline_args))
    assert main(["dataflow-job", *args]) == 0
    return json.loads(job_file.read_text())


def stages(job: dict) -> set[str]:
    """The top-level transforms of the graph (their names have no '/')."""
    transforms = job["pipeline"]["components"]["transforms"].values()
    return {t["uniqueName"] for t in transforms if "/" not in t["uniqueName"]}


def container_images(job: dict) -> set[str]:
    """The container images of the graph's environments (what Dataflow's workers run)."""
    environments = job["pipeline"]["components"]["environments"].values()
    return {
        beam_runner_api_pb2.DockerPayload.FromString(b64decode(env["payload"])).container_image
        for env in environments
        if env["urn"] == "beam:env:docker:v1"
    }


@pytest.mark.parametrize(
    ("args", "job_type", "expected"),
    [
        (["stream"], "JOB_TYPE_STREAMING", STREAM_STAGES),
        (["reprocess", "--start", "2026-11-24T00:00", "--end", "2026-11-25T00:00"],
         "JOB_TYPE_BATCH", BATCH_STAGES),
    ],
)  # fmt: skip
def test_pipeline_translates_for_dataflow(
    args: list[str], job_type: str, expected: set[str], settings: Settings,
    loaded_lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    job = dataflow_job(settings, tmp_path, monkeypatch, *args)

    assert job["job"]["type"] == job_type
    assert expected <= stages(job), expected - stages(job)
    # Dataflow's own Python SDK container of this Python and Beam version runs the job's code.
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    dataflow_image = f"gcr.io/cloud-dataflow/v1beta3/beam_python{python}_sdk:{beam.__version__}"
    assert container_images(job) == {dataflow_image}
