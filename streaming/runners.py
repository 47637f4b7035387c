"""Beam runner options: the same pipeline on the local runners, dask, Flink or Dataflow.

``BETLAKE_RUNNER`` picks the platform: ``local`` (default; Prism for the stream, the in-process
FnApiRunner for batch), ``dask`` (batch on Beam's DaskRunner, on the ``dask.distributed``
scheduler at ``BETLAKE_DASK_SCHEDULER`` or on a ``LocalCluster`` of one worker process per core
started for the run; the stream, which the DaskRunner cannot run, stays on Prism), ``flink`` or
``dataflow``; ``BETLAKE_PIPELINE_ARGS`` adds any Beam options (``--flink_master=host:8081``,
``--project=... --region=... --temp_location=gs://...``, ``--dask_npartitions=...``).
:func:`dataflow_job` translates a pipeline for Dataflow offline, without submitting it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import apache_beam as beam
from apache_beam import __version__ as BEAM_VERSION
from apache_beam.metrics import MetricsFilter
from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions, TestOptions
from apache_beam.runners.runner import PipelineResult
from apache_beam.runners.worker import statesampler
from google.protobuf import json_format

from betlake.core.config import ConfigError, Settings
from betlake.local.daemon import port_answers

log = logging.getLogger("betlake.stream")
prism_log = logging.getLogger("betlake.prism")
BEAM_RUNNERS = {"flink": "FlinkRunner", "dataflow": "DataflowRunner"}  # stream and batch there
DASK_RUNNER = "apache_beam.runners.dask.dask_runner"  # the module of Beam's DaskRunner
JOB_WATCH_SECONDS = 10 * 365 * 24 * 3600  # how long a stream's state is watched: ten years
STEP_SAMPLING_MS = 20  # how often a bundle's step timer samples (Beam's default: 200 ms)


def prism_binary(cache: Path) -> Path:
    """The Prism runner built by ``scripts/install_prism.sh`` for this Beam version."""
    binary = cache / f"prism-{BEAM_VERSION}" / "prism"
    if not binary.is_file():
        raise ConfigError(
            f"the Prism runner is not installed at {binary}: run scripts/install_prism.sh"
        )
    return binary


def _die_with_parent() -> None:
    """In the child before exec: its own session (a signal to the job's process group does not
    reach it), and SIGTERM when the job's process dies, even by kill -9 (Linux)."""
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _forward(lines: Iterable[str]) -> None:
    """Prism's own log lines, into the ``betlake.prism`` logger."""
    for line in lines:
        prism_log.warning("%s", line.rstrip())


@contextmanager
def prism_server(cache: Path, timeout: float = 60) -> Iterator[str]:
    """A Prism job server that the job alone stops: yields its endpoint.

    Beam's PrismRunner starts Prism in the job's process group, so Ctrl-C (or a service
    manager's SIGTERM to the group) killed Prism under the running pipeline. This one lives in
    its own session, is stopped after the pipeline, and dies with the job if the job is killed.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(prism_binary(cache)), f"--job_port={port}", "--log_level=warn", "--log_kind=text",
         "--serve_http=false"],
        stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent,
    )  # fmt: skip
    threading.Thread(target=_forward, args=(server.stderr,), daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise ConfigError(f"the Prism runner did not start on port {port}") from None
                time.sleep(0.1)
        log.info("Prism runner (pid %d) on 127.0.0.1:%d", server.pid, port)
        yield f"localhost:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=3)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def pipeline_options(
    settings: Settings,
    streaming: bool,
    job_endpoint: str | None = None,
    dask_scheduler: str | None = None,
) -> PipelineOptions:
    """Options for a stream (``streaming``) or batch run on the configured platform; a local
    stream runs on the Prism job server at ``job_endpoint`` (see :func:`prism_server`), a dask
    batch on the scheduler at ``dask_scheduler`` (else ``BETLAKE_DASK_SCHEDULER``)."""
    if settings.runner not in BEAM_RUNNERS:
        end_bundles_promptly()
    if settings.runner in BEAM_RUNNERS:
        args = [f"--runner={BEAM_RUNNERS[settings.runner]}"]
    elif settings.runner == "dask" and not streaming:
        # One task per element of the first step (a read chunk); the DaskRunner's default
        # puts 128 in one task, which would read a whole backfill on one worker.
        args = [f"--runner={DASK_RUNNER}.DaskRunner", "--dask_partition_size=1"]
        if dask_scheduler or settings.dask_scheduler:
            args.append(f"--dask_client_address={dask_scheduler or settings.dask_scheduler}")
    elif streaming:
        # The job service's state stream, which a running job is watched through, ends after
        # --job_server_timeout (Beam's default: 300 s): a stream runs for as long as it is let.
        args = ["--runner=PrismRunner", "--environment_type=LOOPBACK",
                f"--job_server_timeout={JOB_WATCH_SECONDS}"]  # fmt: skip
        if job_endpoint:
            args.append(f"--job_endpoint={job_endpoint}")
        else:
            args += [f"--prism_location={prism_binary(settings.cache)}", "--prism_log_level=warn"]
    else:
        # Beam's in-process batch runner, named directly: the DirectRunner would first try a
        # Prism it downloads (impossible here), and leave that failure in Prism's shared server.
        args = ["--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"]
    if streaming:
        args.append("--streaming")
    return PipelineOptions([*args, *settings.pipeline_args])


def end_bundles_promptly() -> None:
    """Make this process's SDK workers (local runners run theirs here) end a bundle at once.

    Beam's worker times its steps with a sampling thread per bundle, which sleeps up to 200 ms
    between samples, and a bundle ends only once that thread has woken and been joined
    (``StateSampler.stop``): up to 200 ms added to every bundle, so to every read of the
    stream, whose next read is the next bundle. Sampling every :data:`STEP_SAMPLING_MS`
    bounds that wait; there is no option for it."""
    statesampler.StateSampler.__init__.__defaults__ = (STEP_SAMPLING_MS,)


@contextmanager
def stream_options(settings: Settings) -> Iterator[PipelineOptions]:
    """Options for the stream on the configured platform; locally, with its own Prism server
    for as long as the block runs."""
    if settings.runner in BEAM_RUNNERS:
        yield pipeline_options(settings, streaming=True)
        return
    with prism_server(settings.cache) as endpoint:
        yield pipeline_options(settings, streaming=True, job_endpoint=endpoint)


def dataflow_job(
    settings: Settings, build: Callable[[beam.Pipeline], object], *, streaming: bool
) -> dict[str, object]:
    """Translate the pipeline ``build`` adds for Dataflow, offline (Beam's ``--dry_run``: no
    credentials, nothing staged or submitted). Returns the job request and the portable graph
    Dataflow would run (``pipeline``: its transforms, coders and SDK container), and writes
    them as JSON to ``--dataflow_job_file`` when ``BETLAKE_PIPELINE_ARGS`` names one.

    Needs ``BETLAKE_RUNNER=dataflow`` and the job's ``--project``, ``--region`` and
    ``--temp_location=gs://...`` in ``BETLAKE_PIPELINE_ARGS``.
    """
    if settings.runner != "dataflow":
        raise ConfigError(
            f"BETLAKE_RUNNER must be dataflow to translate for Dataflow, got {settings.runner!r}"
        )
    options = pipeline_options(settings, streaming=streaming)
    options.view_as(TestOptions).dry_run = True
    pipeline = beam.Pipeline(options=options)
    build(pipeline)
    job = pipeline.run().job
    graph = {
        "job": json.loads(job.json()),
        "pipeline": json_format.MessageToDict(job.proto_pipeline),
    }
    job_file = options.view_as(DebugOptions).dataflow_job_file
    if job_file:
        Path(job_file).write_text(json.dumps(graph, indent=1))
    return graph


@contextmanager
def local_dask_cluster(workers: int) -> Iterator[str]:
    """A ``dask.distributed`` LocalCluster on 127.0.0.1 (``workers`` processes of one thread,
    its dashboard on a free port) for as long as the block runs: yields its address."""
    from dask.distributed import LocalCluster

    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0", silence_logs=logging.WARNING,
    ) as cluster:  # fmt: skip
        log.info("dask LocalCluster of %d workers, dashboard %s", workers, cluster.dashboard_link)
        yield cluster.scheduler_address


@contextmanager
def batch_options(settings: Settings) -> Iterator[PipelineOptions]:
    """Options for a batch run on the configured platform; on dask without a scheduler, with a
    LocalCluster of one worker process per core for as long as the block runs."""
    if settings.runner != "dask":
        yield pipeline_options(settings, streaming=False)
        return
    if settings.dask_scheduler:
        host, port = settings.dask_scheduler.split("://", 1)[1].rsplit(":", 1)
        if not port_answers(int(port), host.strip("[]"), timeout=5):
            raise ConfigError(
                f"no dask scheduler answers at {settings.dask_scheduler} (BETLAKE_DASK_SCHEDULER)"
            )
        yield pipeline_options(settings, streaming=False)
        return
    with local_dask_cluster(os.cpu_count() or 1) as address:
        yield pipeline_options(settings, streaming=False, dask_scheduler=address)


def counters(result: PipelineResult, namespace: str = "betlake") -> dict[str, int]:
    """The counters in ``namespace`` of a finished (or cancelled) pipeline run.

    Beam 2.77's DaskRunner keeps no metrics: there, the tallies (dicts of counts) that the
    pipeline's last step output are summed, and the run's dask client is closed.
    """
    dask_runner = sys.modules.get(DASK_RUNNER)
    if dask_runner is not None and isinstance(result, dask_runner.DaskRunnerResult):
        try:
            outputs = result.client.gather(result.futures)
        finally:
            result.client.close()
        totals: Counter[str] = Counter()
        for output in outputs:
            for tallies in output:
                totals.update(tallies)
        return dict(totals)
    query = result.metrics().query(MetricsFilter().with_namespace(namespace))
    return {c.key.metric.name: int(c.committed or 0) for c in query["counters"]}
