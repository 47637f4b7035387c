"""Beam runner options: the same pipeline on the local runners, Flink or Dataflow.

``BETLAKE_RUNNER`` picks the platform: ``local`` (default; Prism for the stream, the in-process
FnApiRunner for batch), ``flink`` or ``dataflow``; ``BETLAKE_PIPELINE_ARGS`` adds any Beam options
(``--flink_master=host:8081``, ``--project=... --region=... --temp_location=gs://...``).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from apache_beam import __version__ as BEAM_VERSION
from apache_beam.metrics import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult

from betlake.config import ConfigError

RUNNERS = {"local": None, "flink": "FlinkRunner", "dataflow": "DataflowRunner"}


def prism_binary() -> Path:
    """The Prism runner built by ``scripts/install_prism.sh`` for this Beam version."""
    cache = Path(os.environ.get("BETLAKE_CACHE", Path.home() / ".cache" / "betlake"))
    binary = cache / f"prism-{BEAM_VERSION}" / "prism"
    if not binary.is_file():
        raise ConfigError(
            f"the Prism runner is not installed at {binary}: run scripts/install_prism.sh"
        )
    return binary


def pipeline_options(streaming: bool, env: dict[str, str] | None = None) -> PipelineOptions:
    """Options for a stream (``streaming``) or batch run on the configured platform."""
    env = dict(os.environ) if env is None else env
    platform = env.get("BETLAKE_RUNNER", "local")
    if platform not in RUNNERS:
        raise ConfigError(f"BETLAKE_RUNNER must be one of {', '.join(RUNNERS)}, got {platform!r}")
    extra = shlex.split(env.get("BETLAKE_PIPELINE_ARGS", ""))
    if platform != "local":
        args = [f"--runner={RUNNERS[platform]}"]
    elif streaming:
        args = [
            "--runner=PrismRunner",
            f"--prism_location={prism_binary()}",
            "--environment_type=LOOPBACK",
            "--prism_log_level=warn",
        ]
    else:
        # Beam's in-process batch runner, named directly: the DirectRunner would first try a
        # Prism it downloads (impossible here), and leave that failure in Prism's shared server.
        args = ["--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"]
    if streaming:
        args.append("--streaming")
    return PipelineOptions([*args, *extra])


def counters(result: PipelineResult) -> dict[str, int]:
    """The betlake counters of a finished (or cancelled) pipeline run."""
    query = result.metrics().query(MetricsFilter().with_namespace("betlake"))
    return {c.key.metric.name: int(c.committed or 0) for c in query["counters"]}
