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

import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from betlake.core.config import BetlakeError, Settings
from betlake.core.processes import restore_default_signals

KAFKA_VERSION = "4.4.0"
"""Pinned ``org.apache.kafka:kafka_2.13`` version (Kafka 4.x needs Java 17+)."""
LOG4J_VERSION = "2.25.5"  # matches the log4j-core that kafka_2.13 4.4.0 pulls in
SLF4J_VERSION = "2.0.17"  # slf4j 2.x so that the log4j-slf4j2-impl provider is found
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

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
_COMPLETE_MARKER = ".complete"
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
    def console_log(self) -> Path:
        """The JVM's redirected stdout/stderr."""
        return self.logs / "console.log"

    @property
    def config(self) -> Path:
        """Generated ``server.properties``."""
        return self.home / "server.properties"

    @property
    def log4j_config(self) -> Path:
        """Generated log4j2 configuration."""
        return self.home / "log4j2.xml"

    @property
    def pid_file(self) -> Path:
        """PID of the running broker JVM."""
        return self.home / "broker.pid"

    @property
    def state_file(self) -> Path:
        """JSON with the ports in use (the controller port is fixed at format time)."""
        return self.home / "broker.json"


# --------------------------------------------------------------------------- jars


_FETCH_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>betlake.local</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (so concurrent fetches do not race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_jars(paths: BrokerPaths | None = None, version: str = KAFKA_VERSION) -> Path:
    """Fetch the Kafka broker jars and runtime deps once; return the classpath directory.

    A cache hit (a complete ``libs`` dir) returns immediately without touching the network.
    """
    paths = paths or BrokerPaths.default(version=version)
    libs = paths.libs
    if (libs / _COMPLETE_MARKER).is_file():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven ('mvn') is needed once to fetch the Kafka jars; not on PATH")
    with _file_lock(paths.cache.with_name(paths.cache.name + ".lock")):
        if (libs / _COMPLETE_MARKER).is_file():  # another process fetched meanwhile
            return libs
        paths.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=paths.cache, prefix="fetch-") as tmp:
            work = Path(tmp)
            pom = _FETCH_POM.format(kafka=version, slf4j=SLF4J_VERSION, log4j=LOG4J_VERSION)
            (work / "pom.xml").write_text(pom)
            out = work / "libs"
            cmd = [
                mvn, "-q", "-B", "-f", str(work / "pom.xml"),
                f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                "-DincludeScope=runtime", f"-DoutputDirectory={out}",
            ]  # fmt: skip
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
            jars = sorted(p.name for p in out.glob("*.jar")) if out.is_dir() else []
            if proc.returncode != 0 or not any(j.startswith("kafka_2.13-") for j in jars):
                tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
                raise BrokerError(
                    f"fetching kafka_2.13:{version} with Maven failed "
                    f"(exit {proc.returncode}):\n{tail}"
                )
            (out / _COMPLETE_MARKER).write_text("\n".join(jars) + "\n")
            if libs.exists():  # leftover of an interrupted fetch
                shutil.rmtree(libs)
            out.rename(libs)
    return libs


# --------------------------------------------------------------------------- config


def _parse_bootstrap(bootstrap: str) -> tuple[str, int]:
    """Split ``host:port``; only loopback hosts are allowed."""
    host, sep, port = bootstrap.rpartition(":")
    if not sep or not port.isdigit() or host not in _LOCAL_HOSTS:
        raise BrokerError(f"bootstrap must be 127.0.0.1:<port> (or localhost), got {bootstrap!r}")
    return "127.0.0.1", int(port)


def _port_answers(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Return True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


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


def _read_state(paths: BrokerPaths) -> dict[str, object]:
    try:
        return dict(json.loads(paths.state_file.read_text()))
    except (OSError, ValueError):
        return {}


def _write_state(paths: BrokerPaths, **state: object) -> None:
    paths.state_file.write_text(json.dumps(state, indent=2) + "\n")


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
    <RollingFile name="file" fileName="${sys:kafka.logs.dir}/server.log"
                 filePattern="${sys:kafka.logs.dir}/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="20 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="info"><AppenderRef ref="file"/></Root>
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
    saved = _read_state(paths).get("controller_port")
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


def _read_pid(paths: BrokerPaths) -> int | None:
    try:
        return int(paths.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    """Return the argv of a live, non-zombie process (empty if gone or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _is_our_broker(pid: int, paths: BrokerPaths) -> bool:
    """Return True if ``pid`` is alive and runs ``kafka.Kafka`` with this home's config."""
    argv = _cmdline(pid)
    return MAIN_CLASS in argv and str(paths.config) in argv


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child, so it does not linger as a zombie."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _wait_gone(pid: int, paths: BrokerPaths, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        _reap(pid)
        if not _is_our_broker(pid, paths):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _tail(path: Path, n: int = 30) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def _log_tail(paths: BrokerPaths, n: int = 30) -> str:
    """Last ``n`` lines of the server log, preceded by any JVM console output."""
    parts = []
    console = _tail(paths.console_log, n)
    if console:
        parts.append(f"--- {paths.console_log} ---\n" + "\n".join(console))
    server = _tail(paths.server_log, n)
    if server or not console:
        parts.append(f"--- {paths.server_log} ---\n" + ("\n".join(server) or "(empty)"))
    return "\n".join(parts)


def _broker_answers(bootstrap: str, timeout: float) -> bool:
    """Return True if a Kafka broker on ``bootstrap`` answers a metadata request."""
    _, port = _parse_bootstrap(bootstrap)
    if not _port_answers(port):  # cheap check first: keeps librdkafka from logging errors
        return False
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000})
    try:
        md = admin.list_topics(timeout=max(timeout, 0.5))
    except Exception:  # KafkaException on timeout / transport errors
        return False
    return bool(md.brokers)


def _wait_ready(pid: int, bootstrap: str, paths: BrokerPaths, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if _broker_answers(bootstrap, timeout=min(5.0, max(remaining, 0.5))):
            return
        _reap(pid)
        if not _is_our_broker(pid, paths):
            paths.pid_file.unlink(missing_ok=True)
            raise BrokerError(
                f"Kafka broker (pid {pid}) exited during startup; "
                f"last 30 lines of its log:\n{_log_tail(paths)}"
            )
        if time.monotonic() >= deadline:
            raise BrokerError(
                f"Kafka broker (pid {pid}) did not answer on {bootstrap} within {timeout:g}s; "
                f"last 30 lines of its log:\n{_log_tail(paths)}"
            )
        time.sleep(0.25)


def start(bootstrap: str = DEFAULT_BOOTSTRAP, home: Path | None = None, timeout: float = 60) -> int:
    """Start the broker detached (idempotent); wait until it answers; return its PID.

    If this home's broker already runs, its PID is returned once it answers on the
    bootstrap it was started with. Raises :class:`BrokerError` if it fails or does not
    answer within ``timeout`` s (a broker started by this call is then stopped again).
    """
    paths = BrokerPaths.default(home)
    _, port = _parse_bootstrap(bootstrap)
    bootstrap = f"127.0.0.1:{port}"
    pid = _read_pid(paths)
    if pid is not None and _is_our_broker(pid, paths):
        running = str(_read_state(paths).get("bootstrap") or bootstrap)
        if running != bootstrap:
            raise BrokerError(
                f"the broker of {paths.home} already runs on {running} (pid {pid}), "
                f"not {bootstrap}; stop it first"
            )
        _wait_ready(pid, running, paths, timeout)
        return pid
    paths.pid_file.unlink(missing_ok=True)  # stale
    if _port_answers(port) or not _port_free(port):
        raise BrokerError(f"port 127.0.0.1:{port} is already in use by another process")

    ensure_jars(paths)
    paths.home.mkdir(parents=True, exist_ok=True)
    controller_port = _write_config(paths, port)
    _format_storage(paths)
    _write_state(paths, bootstrap=bootstrap, controller_port=controller_port,
                 kafka_version=KAFKA_VERSION)  # fmt: skip

    cmd = _java_cmd(paths, MAIN_CLASS, str(paths.config))
    with open(paths.console_log, "ab") as console:
        proc = subprocess.Popen(
            cmd,
            cwd=paths.home,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=restore_default_signals,
        )
    paths.pid_file.write_text(f"{proc.pid}\n")
    try:
        _wait_ready(proc.pid, bootstrap, paths, timeout)
    except BaseException:
        stop(paths.home)  # leave no half-started JVM behind (also on KeyboardInterrupt)
        raise
    return proc.pid


def stop(home: Path | None = None, timeout: float = 20) -> bool:
    """Stop this home's broker: SIGTERM, then SIGKILL after ``timeout`` s.

    Only the PID in the pid file is signalled, and only if it runs ``kafka.Kafka`` with
    this home's config. Returns True if a broker was running.
    """
    paths = BrokerPaths.default(home)
    pid = _read_pid(paths)
    if pid is None:
        return False
    _reap(pid)
    if not _is_our_broker(pid, paths):
        paths.pid_file.unlink(missing_ok=True)
        return False
    try:
        os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, paths, timeout):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, paths, 10)
    except ProcessLookupError:
        pass
    paths.pid_file.unlink(missing_ok=True)
    return True


def status(bootstrap: str | None = None, home: Path | None = None) -> str:
    """One human-readable line: running (pid, bootstrap) / stopped / stale pid file."""
    paths = BrokerPaths.default(home)
    bootstrap = bootstrap or str(_read_state(paths).get("bootstrap") or DEFAULT_BOOTSTRAP)
    pid = _read_pid(paths)
    if pid is not None:
        _reap(pid)
        if _is_our_broker(pid, paths):
            _, port = _parse_bootstrap(bootstrap)
            suffix = "" if _port_answers(port) else ", not answering yet"
            return f"running (pid {pid}, bootstrap {bootstrap}{suffix})"
        return f"stale pid file {paths.pid_file} (pid {pid} is not our Kafka broker)"
    return f"stopped (home {paths.home})"
