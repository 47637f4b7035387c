"""The local HDFS: one JVM running a MiniDFSCluster (a namenode and one datanode) from Maven
Central's ``org.apache.hadoop:hadoop-client-minicluster``, for a lake at
``hdfs://127.0.0.1:<port>/lake`` (delta-rs reads and writes it with its bundled hdfs-native
client; no Hadoop install or configuration is needed on the client side).

The namenode listens on 127.0.0.1 at the port of an ``hdfs://`` ``BETLAKE_LAKE`` (default 9820),
the datanode on free 127.0.0.1 ports. Blocks and metadata stay in ``.betlake/hdfs/data`` across
restarts (formatted on the first start only); the JVM's heap is capped for a small machine.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from betlake.core.config import BetlakeError, Settings
from betlake.local.daemon import Daemon, DaemonService, port_answers
from betlake.local.maven import fetch_jars

HADOOP_VERSION = "3.4.2"
DEFAULT_PORT = 9820  # Hadoop 3's namenode RPC port
MAIN_CLASS = "org.apache.hadoop.mapreduce.MiniHadoopClusterManager"  # -nomr: HDFS only
JVM_OPTS = ("-Xmx384m", "-Xms64m", "-XX:+UseSerialGC", "-XX:ActiveProcessorCount=2",
            "-Djava.awt.headless=true")  # fmt: skip


def daemon(home: Path | None = None) -> Daemon:
    """The cluster of ``home`` (default ``<cwd>/.betlake/hdfs``)."""
    return Daemon("hdfs minicluster", (home or Path.cwd() / ".betlake" / "hdfs").resolve())


def namenode_port(settings: Settings) -> int:
    """The namenode port of an ``hdfs://`` lake, else the default."""
    if settings.lake.startswith("hdfs://"):
        return urlsplit(settings.lake).port or DEFAULT_PORT
    return DEFAULT_PORT


def jars(settings: Settings) -> Path:
    """The minicluster's classpath folder, fetched once into the cache."""
    artifacts = [f"org.apache.hadoop:hadoop-client-{part}:{HADOOP_VERSION}"
                 for part in ("minicluster", "runtime")]  # fmt: skip
    return fetch_jars("HDFS", settings.cache / f"hadoop-{HADOOP_VERSION}", artifacts)


def start(settings: Settings, home: Path | None = None, timeout: float = 180) -> int:
    """Start the cluster (idempotent); wait until its datanode is up; return the pid."""
    java = shutil.which("java")
    if java is None:
        raise BetlakeError("the local HDFS needs 'java' (11+) on PATH")
    port = namenode_port(settings)
    cluster = daemon(home)
    details = cluster.home / "cluster.json"  # written once the cluster is up
    if cluster.pid() is None:
        if port_answers(port):
            raise BetlakeError(f"port 127.0.0.1:{port} is already in use by another process")
        details.unlink(missing_ok=True)
    data = cluster.home / "data"
    argv = [
        java, *JVM_OPTS, "-cp", f"{jars(settings)}/*", MAIN_CLASS,
        "-nomr", "-nnport", str(port), "-nnhttpport", "0", "-datanodes", "1",
        "-writeDetails", str(details), "-D", f"hdfs.minidfs.basedir={data}",
        *([] if (data / "name-0-1" / "current").is_dir() else ["-format"]),
    ]  # fmt: skip
    ready = lambda: details.is_file() and port_answers(port)  # noqa: E731
    return cluster.start(argv, ready, timeout=timeout, namenode=f"hdfs://127.0.0.1:{port}")


def env(settings: Settings) -> dict[str, str]:
    """The settings that put the lake on the local cluster."""
    if settings.lake.startswith("hdfs://"):
        return {"BETLAKE_LAKE": settings.lake}
    return {"BETLAKE_LAKE": f"hdfs://127.0.0.1:{DEFAULT_PORT}/lake"}


class HdfsService(DaemonService):
    """The local HDFS of :mod:`betlake.local.hdfs`."""

    name = "hdfs"
    summary = "HDFS MiniDFSCluster (one JVM, jars from Maven Central) for a lake at hdfs://"

    daemon = staticmethod(daemon)

    def launch(self, settings: Settings) -> int:
        return start(settings)

    def listening(self, settings: Settings, state: Mapping[str, object]) -> str:
        return str(state.get("namenode"))

    def env(self, settings: Settings) -> dict[str, str]:
        return env(settings)
