"""A local ``dask.distributed`` cluster for the DaskRunner: a scheduler (with its dashboard)
and one worker process per core, all on 127.0.0.1, so a backfill can be watched spreading over
workers (``BETLAKE_RUNNER=dask``, ``BETLAKE_DASK_SCHEDULER``).

The scheduler listens where ``BETLAKE_DASK_SCHEDULER`` says (default ``tcp://127.0.0.1:8786``),
its dashboard on the next port; both servers live under ``.betlake/dask`` (``scheduler/``,
``workers/``: pid, argv, log), started and stopped by :class:`betlake.local.daemon.Daemon`.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from betlake.core.config import BetlakeError, Settings
from betlake.local.daemon import Daemon, port_answers

DEFAULT_SCHEDULER = "tcp://127.0.0.1:8786"
_LOCAL_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class DaskCluster:
    """The scheduler and workers of one home, the scheduler on 127.0.0.1:``port``."""

    home: Path
    port: int
    workers: int

    @classmethod
    def of(cls, settings: Settings, home: Path | None = None) -> DaskCluster:
        """The cluster ``settings`` point at (``BETLAKE_DASK_SCHEDULER``, on this machine)."""
        address = settings.dask_scheduler or DEFAULT_SCHEDULER
        host, _, port = address.split("://", 1)[1].rpartition(":")
        if host not in _LOCAL_HOSTS:
            raise BetlakeError(
                f"betlake local runs a dask scheduler on 127.0.0.1 only; "
                f"BETLAKE_DASK_SCHEDULER is {address}"
            )
        return cls(home or Path.cwd() / ".betlake" / "dask", int(port), os.cpu_count() or 1)

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.port + 1}/status"

    @property
    def scheduler(self) -> Daemon:
        return Daemon("dask scheduler", self.home / "scheduler")

    @property
    def worker_pool(self) -> Daemon:
        return Daemon("dask workers", self.home / "workers")

    def workers_connected(self) -> int:
        """How many workers the scheduler knows (0 if its dashboard does not answer)."""
        url = f"http://127.0.0.1:{self.port + 1}/json/counts.json"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return int(json.load(reply).get("workers", 0))
        except (OSError, ValueError):
            return 0

    def start(self, timeout: float = 120) -> str:
        """Start the scheduler, then the workers (idempotent); one line: where it listens."""
        if self.scheduler.pid() is None and port_answers(self.port):
            raise BetlakeError(f"port 127.0.0.1:{self.port} is already in use by another process")
        self.scheduler.start(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", str(self.port), "--dashboard-address", f"127.0.0.1:{self.port + 1}"],
            lambda: port_answers(self.port) and port_answers(self.port + 1),
            timeout=timeout, address=self.address,
        )  # fmt: skip
        pid = self.worker_pool.start(
            [sys.executable, "-m", "distributed.cli.dask_worker", self.address,
             "--host", "127.0.0.1", "--nworkers", str(self.workers), "--nthreads", "1",
             "--no-dashboard", "--local-directory", str(self.home / "workers")],
            lambda: self.workers_connected() >= self.workers,
            timeout=timeout,
        )  # fmt: skip
        return (
            f"dask scheduler on {self.address} (pid {self.scheduler.pid()}), "
            f"{self.workers} workers (pid {pid}), dashboard {self.dashboard}"
        )

    def stop(self) -> bool:
        """Stop the workers, then the scheduler; whether either ran."""
        workers = self.worker_pool.stop()
        return self.scheduler.stop() or workers

    def status(self) -> str:
        """One line: running (where, how many workers) or stopped."""
        pid = self.scheduler.pid()
        if pid is None:
            return f"dask stopped (home {self.home})"
        return (
            f"dask running: scheduler {self.address} (pid {pid}), "
            f"{self.workers_connected()} workers connected, dashboard {self.dashboard}"
        )


class DaskService:
    """The local dask cluster of :class:`DaskCluster`."""

    name = "dask"
    summary = "dask.distributed scheduler, dashboard and one worker per core (DaskRunner)"

    def start(self, settings: Settings) -> str:
        return DaskCluster.of(settings).start()

    def stop(self, settings: Settings) -> bool:
        return DaskCluster.of(settings).stop()

    def status(self, settings: Settings) -> str:
        return DaskCluster.of(settings).status()

    def env(self, settings: Settings) -> dict[str, str]:
        return {
            "BETLAKE_RUNNER": "dask",
            "BETLAKE_DASK_SCHEDULER": DaskCluster.of(settings).address,
        }
