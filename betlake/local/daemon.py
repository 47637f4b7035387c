"""A detached local server betlake starts and alone stops: one place for pid files, logs,
readiness and stopping, shared by every local stand-in (Kafka, NATS, Pub/Sub, S3, HDFS, ...).

Each server lives in ``home`` (under ``.betlake/<name>``): ``server.pid``, ``server.json`` (the
argv it was started with, and where it listens) and ``server.log`` (its stdout and stderr). It
starts in a session of its own with default signal handling (a background job can inherit
SIGINT/SIGTERM as ignored), and only the pid in the pid file is ever signalled, and only while
that process still runs the argv it was started with.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from betlake.core.config import BetlakeError, Settings
from betlake.core.processes import restore_default_signals


class DaemonError(BetlakeError):
    """A local server could not be started or did not answer."""


def port_answers(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (one-time installs of servers do not race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Daemon:
    """One detached server: its name (for messages) and its home folder."""

    name: str
    home: Path

    @property
    def pid_file(self) -> Path:
        return self.home / "server.pid"

    @property
    def state_file(self) -> Path:
        return self.home / "server.json"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    def state(self) -> dict[str, object]:
        """What :meth:`start` recorded (argv, and the caller's ``state``), or {}."""
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def pid(self) -> int | None:
        """The pid of this home's server while it runs, else None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        with suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it was our child
        if _runs(pid, self.state().get("argv") or []):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(
        self,
        argv: Sequence[str],
        ready: Callable[[], bool],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
        **state: object,
    ) -> int:
        """Start ``argv`` detached unless it runs already; wait until ``ready()``; return the
        pid. ``state`` (e.g. the port) is kept for :meth:`state`. A server that exits or does
        not answer in ``timeout`` s is stopped, and the error quotes its log's last lines."""
        running = self.pid()
        if running is None:
            self.home.mkdir(parents=True, exist_ok=True)
            with open(self.log_file, "ab") as log:
                process = subprocess.Popen(
                    list(argv), cwd=self.home, env=None if env is None else dict(env),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=restore_default_signals,
                )  # fmt: skip
            running = process.pid
            self.state_file.write_text(json.dumps({"argv": list(argv), **state}))
            self.pid_file.write_text(f"{running}\n")
            while process.poll() is None and not _runs(running, argv):  # until it has exec'd
                time.sleep(0.01)
        deadline = time.monotonic() + timeout
        while not ready():
            if self.pid() is None or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                why = (
                    "exited" if time.monotonic() <= deadline else f"did not answer in {timeout:g}s"
                )
                raise DaemonError(
                    f"{self.name} (pid {running}) {why}; last lines of its log:\n{tail}"
                )
            time.sleep(0.2)
        return running

    def stop(self, timeout: float = 20) -> bool:
        """SIGTERM (then SIGKILL after ``timeout`` s) to this home's server; whether it ran."""
        pid = self.pid()
        if pid is None:
            return False
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.pid() is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.pid() is not None:
                os.kill(pid, signal.SIGKILL)
                while self.pid() is not None:
                    time.sleep(0.05)
        while not _exited(pid):  # its argv goes before its files do: wait for its ports
            time.sleep(0.01)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _exited(pid: int) -> bool:
    """Whether ``pid`` has finished exiting (gone, or a zombie: its files, sockets included, are
    closed); a zombie child of ours is reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    if state in ("Z", "X"):
        with suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return True
    return False


def _runs(pid: int, argv: Sequence[str]) -> bool:
    """Whether ``pid`` is alive (not a zombie) and runs ``argv``, directly or through the
    interpreter of a script's ``#!`` line."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    running = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    if not argv or len(running) < len(argv):
        return False
    program = Path(argv[0]).name
    head, tail = running[: len(running) - len(argv) + 1], running[len(running) - len(argv) + 1 :]
    return tail == list(argv[1:]) and any(Path(part).name == program for part in head)


class DaemonService:
    """A local stand-in that is one :class:`Daemon`, for ``betlake local``: it starts it, stops
    it by pid, and says where it listens (from the daemon's state) or that it is stopped.
    Subclasses name it and say how it starts, where it listens and what environment points
    betlake at it."""

    name: str
    summary: str

    def daemon(self) -> Daemon:
        raise NotImplementedError

    def launch(self, settings: Settings) -> int:
        """Start the server unless it runs; its pid."""
        raise NotImplementedError

    def listening(self, settings: Settings, state: Mapping[str, object]) -> str:
        """Where the running server listens, from the state it was started with."""
        raise NotImplementedError

    def env(self, settings: Settings) -> dict[str, str]:
        raise NotImplementedError

    def start(self, settings: Settings) -> str:
        pid = self.launch(settings)
        where = self.listening(settings, self.daemon().state())
        return f"{self.name} running on {where} (pid {pid})"

    def stop(self, settings: Settings) -> bool:
        return self.daemon().stop()

    def status(self, settings: Settings) -> str:
        server = self.daemon()
        pid = server.pid()
        if pid is None:
            return f"{self.name} stopped (home {server.home})"
        return f"{self.name} running on {self.listening(settings, server.state())} (pid {pid})"
