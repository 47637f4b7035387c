"""Local single-node Apache Kafka broker (KRaft mode) for development and tests.

The broker jars (``org.apache.kafka:kafka_2.13`` plus its runtime dependencies and a
log4j2 binding) are fetched once from Maven Central with ``mvn`` and cached under
``$BETLAKE_CACHE/kafka-<version>/`` (default ``~/.cache/betlake/kafka-<version>/``).
The broker runs as a detached JVM (``kafka.Kafka``) acting as both broker and controller,
listening on 127.0.0.1 only, with its config, data, logs and pid file under ``home``
(default ``<cwd>/.betlake/kafka``).

Typical use::

    from betlake.local import broker
    pid = broker.start("127.0.0.1:9092")
    print(broker.status())
    broker.stop()
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from betlake.core.config import BetlakeError, Settings
from betlake.local.daemon import Daemon, port_answers
from betlake.local.maven import fetch_jars

KAFKA_VERSION = "4.4.0"
"""Pinned ``org.apache.kafka:kafka_2.13`` version (Kafka 4.x needs Java 17+)."""
LOG4J_VERSION = "2.25.5"  # matches the log4j-core that kafka_2.13 4.4.0 pulls in
SLF4J_VERSION = "2.0.17"  # slf4j 2.x so that the log4j-slf4j2-impl provider is found

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
CLUSTER_ID = "YmV0bGFrZS1rYWZrYS0wMQ"  # base64url of b"betlake-kafka-01"
NODE_ID = 1
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"
JVM_OPTS = (
    "-Xmx512m",
    "-Xms128m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
    "-Dlog4j2.shutdownHookEnabled=false",  # else log4j stops before Kafka's shutdown logs
)
_LOCAL_HOSTS = {"127.0.0.1", "localhost"}
EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")


class BrokerError(BetlakeError):
    """Raised when the local broker cannot be fetched, configured, started or reached."""


@dataclass(frozen=True)
class BrokerPaths:
    """Where the jars are cached (``cache``) and where one broker keeps its state (``home``)."""

    home: Path
    cache: Path

    @classmethod
    def default(cls, home: Path | None = None, version: str = KAFKA_VERSION) -> BrokerPaths:
        """Paths for ``home`` (default ``<cwd>/.betlake/kafka``) and the version's jar cache."""
        home = Path(home) if home is not None else Path.cwd() / ".betlake" / "kafka"
        return cls(
            home=home.expanduser().resolve(),
            cache=(Settings.from_env().cache / f"kafka-{version}").resolve(),
        )

    @property
    def libs(self) -> Path:
        """Directory holding every jar of the broker classpath."""
        return self.cache / "libs"

    @property
    def data(self) -> Path:
        """Kafka ``log.dirs`` (topic partitions and KRaft metadata)."""
        return self.home / "data"

    @property
    def logs(self) -> Path:
        """Directory of the broker's log files."""
        return self.home / "logs"

    @property
    def server_log(self) -> Path:
        """The log4j2 log of the broker."""
        return self.logs / "server.log"

    @property
    def config(self) -> Path:
        """Generated ``server.properties``."""
        return self.home / "server.properties"

    @property
    def log4j_config(self) -> Path:
        """Generated log4j2 configuration."""
        return self.home / "log4j2.xml"

    @property
    def server(self) -> Daemon:
        """The broker's process (pid file, argv and ports, console log) in ``home``."""
        return Daemon("Kafka broker", self.home)


# --------------------------------------------------------------------------- jars


def ensure_jars(paths: BrokerPaths | None = None, version: str = KAFKA_VERSION) -> Path:
    """Fetch the Kafka broker jars and runtime deps once; return the classpath directory."""
    paths = paths or BrokerPaths.default(version=version)
    artifacts = [
        f"org.apache.kafka:kafka_2.13:{version}",
        f"org.slf4j:slf4j-api:{SLF4J_VERSION}",
        f"org.apache.logging.log4j:log4j-slf4j2-impl:{LOG4J_VERSION}",
        f"org.apache.logging.log4j:log4j-core:{LOG4J_VERSION}",
    ]
    return fetch_jars("Kafka", paths.cache, artifacts)


# --------------------------------------------------------------------------- config


def _parse_bootstrap(bootstrap: str) -> tuple[str, int]:
    """Split ``host:port``; only loopback hosts are allowed."""
    host, sep, port = bootstrap.rpartition(":")
    if not sep or not port.isdigit() or host not in _LOCAL_HOSTS:
        raise BrokerError(f"bootstrap must be 127.0.0.1:<port> (or localhost), got {bootstrap!r}")
    return "127.0.0.1", int(port)


def _port_free(port: int) -> bool:
    """Return True if a server could listen on ``127.0.0.1:port`` right now: no other socket
    holds it, except connections in TIME_WAIT (a stopped broker leaves them for about a
    minute; servers, the broker too, bind with SO_REUSEADDR, which ignores them)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    """Return an ephemeral port that is free on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair() -> int:
    """A free 127.0.0.1 port whose successor (the default controller port) is free too, both
    below the kernel's ephemeral range: no client connection takes them as its own port while
    the broker is stopped, so it can start there again at once."""
    try:
        first_ephemeral = int(EPHEMERAL_PORTS.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768
    for _ in range(200):
        port = random.randrange(10_000, first_ephemeral - 1)
        if _port_free(port) and _port_free(port + 1):
            return port
    raise BrokerError("no free pair of ports on 127.0.0.1")


def _server_properties(paths: BrokerPaths, port: int, controller_port: int) -> str:
    plain = f"PLAINTEXT://127.0.0.1:{port}"
    ctrl = f"CONTROLLER://127.0.0.1:{controller_port}"
    props = {
        "process.roles": "broker,controller",
        "node.id": NODE_ID,
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": f"{plain},{ctrl}",
        "advertised.listeners": f"{plain},{ctrl}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": paths.data,
        "num.partitions": 4,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "share.coordinator.state.topic.num.partitions": 4,
        "group.initial.rebalance.delay.ms": 0,
        "log.retention.hours": 168,
    }
    lines = ["# generated by betlake.local.broker; rewritten on every start"]
    lines += [f"{k}={v}" for k, v in props.items()]
    return "\n".join(lines) + "\n"


_LOG4J2_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by betlake.local.broker -->
<Configuration status="warn">
  <Appenders>
    <Console name="console" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <ThresholdFilter level="WARN"/>
    </Console>
    <RollingFile name="file" fileName="${sys:kafka.logs.dir}/server.log"
                 filePattern="${sys:kafka.logs.dir}/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="20 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="info"><AppenderRef ref="file"/><AppenderRef ref="console"/></Root>
    <Logger name="kafka.request.logger" level="warn"/>
    <Logger name="state.change.logger" level="warn"/>
  </Loggers>
</Configuration>
"""


def _java_cmd(paths: BrokerPaths, main: str, *args: str) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise BrokerError("'java' (17+) is not on PATH")
    return [
        java, *JVM_OPTS,
        f"-Dkafka.logs.dir={paths.logs}",
        f"-Dlog4j2.configurationFile={paths.log4j_config}",
        "-cp", f"{paths.libs}/*",
        main, *args,
    ]  # fmt: skip


def _write_config(paths: BrokerPaths, port: int) -> int:
    """Write server.properties + log4j2.xml; return the controller port (stable per home)."""
    paths.data.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    formatted = (paths.data / "meta.properties").is_file()
    saved = paths.server.state().get("controller_port")
    if formatted and isinstance(saved, int):
        controller_port = saved  # the KRaft voter set recorded this endpoint at format time
        if not _port_free(controller_port):
            raise BrokerError(f"controller port 127.0.0.1:{controller_port} is in use")
    else:
        controller_port = port + 1 if port < 65535 and _port_free(port + 1) else _free_port()
    paths.config.write_text(_server_properties(paths, port, controller_port))
    paths.log4j_config.write_text(_LOG4J2_XML)
    return controller_port


def _format_storage(paths: BrokerPaths) -> None:
    """Format ``log.dirs`` once as a standalone KRaft controller with the fixed cluster id."""
    if (paths.data / "meta.properties").is_file():
        return
    cmd = _java_cmd(
        paths, STORAGE_TOOL_CLASS, "format", "--standalone",
        "--cluster-id", CLUSTER_ID, "--config", str(paths.config),
    )  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise BrokerError(f"formatting Kafka storage in {paths.data} failed:\n{tail}")


# --------------------------------------------------------------------------- process


def _broker_answers(bootstrap: str, timeout: float) -> bool:
    """Return True if a Kafka broker on ``bootstrap`` answers a metadata request."""
    _, port = _parse_bootstrap(bootstrap)
    if not port_answers(port):  # cheap check first: keeps librdkafka from logging errors
        return False
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000})
    try:
        md = admin.list_topics(timeout=max(timeout, 0.5))
    except Exception:  # KafkaException on timeout / transport errors
        return False
    return bool(md.brokers)


def start(bootstrap: str = DEFAULT_BOOTSTRAP, home: Path | None = None, timeout: float = 60) -> int:
    """Start the broker detached (idempotent); wait until it answers; return its PID.

    If this home's broker already runs, its PID is returned once it answers on the
    bootstrap it was started with. Raises :class:`BrokerError` if the port is taken, and
    :class:`~betlake.local.daemon.DaemonError` (quoting its log) if it exits or does not answer
    within ``timeout`` s (a broker started by this call is then stopped again).
    """
    paths = BrokerPaths.default(home)
    _, port = _parse_bootstrap(bootstrap)
    bootstrap = f"127.0.0.1:{port}"
    server = paths.server
    if server.pid() is not None:
        running = str(server.state().get("bootstrap") or bootstrap)
        if running != bootstrap:
            raise BrokerError(
                f"the broker of {paths.home} already runs on {running} (pid {server.pid()}), "
                f"not {bootstrap}; stop it first"
            )
        argv = list(server.state()["argv"])
        return server.start(argv, lambda: _broker_answers(bootstrap, 5.0), timeout=timeout)
    if port_answers(port) or not _port_free(port):
        raise BrokerError(f"port 127.0.0.1:{port} is already in use by another process")

    ensure_jars(paths)
    paths.home.mkdir(parents=True, exist_ok=True)
    controller_port = _write_config(paths, port)
    _format_storage(paths)
    return server.start(
        _java_cmd(paths, MAIN_CLASS, str(paths.config)),
        lambda: _broker_answers(bootstrap, 5.0),
        timeout=timeout,
        bootstrap=bootstrap,
        controller_port=controller_port,
        kafka_version=KAFKA_VERSION,
    )


def stop(home: Path | None = None, timeout: float = 20) -> bool:
    """Stop this home's broker: SIGTERM, then SIGKILL after ``timeout`` s; whether it ran."""
    return BrokerPaths.default(home).server.stop(timeout)


def status(bootstrap: str | None = None, home: Path | None = None) -> str:
    """One human-readable line: running (pid, bootstrap) or stopped."""
    paths = BrokerPaths.default(home)
    pid = paths.server.pid()
    if pid is None:
        return f"stopped (home {paths.home})"
    bootstrap = bootstrap or str(paths.server.state().get("bootstrap") or DEFAULT_BOOTSTRAP)
    _, port = _parse_bootstrap(bootstrap)
    suffix = "" if port_answers(port) else ", not answering yet"
    return f"running (pid {pid}, bootstrap {bootstrap}{suffix})"
