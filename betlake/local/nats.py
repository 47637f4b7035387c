"""Local NATS server with JetStream (Debian's ``nats-server``), for development and tests.

It listens on ``BETLAKE_NATS_URL``'s port on 127.0.0.1 only, and keeps its JetStream files,
log and pid file under ``home`` (default ``<cwd>/.betlake/nats``).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from betlake.core.config import Settings
from betlake.local.daemon import Daemon, DaemonError, DaemonService, port_answers

PROGRAM = "nats-server"


def port_of(url: str) -> int:
    """The port of a ``nats://host:port`` URL (4222 if it names none)."""
    return urlsplit(url).port or 4222


def daemon(home: Path | None = None) -> Daemon:
    return Daemon("nats-server", (home or Path.cwd() / ".betlake" / "nats").resolve())


def start(url: str, home: Path | None = None, timeout: float = 60) -> int:
    """Start nats-server with JetStream on ``url``'s port unless it runs; returns its pid."""
    program = shutil.which(PROGRAM) or shutil.which(PROGRAM, path="/usr/sbin:/usr/bin")
    if program is None:
        raise DaemonError(
            "nats-server not found: install Debian's package (apt-get install nats-server; "
            "scripts/setup.sh does it)"
        )
    server, port = daemon(home), port_of(url)
    argv = [program, "-a", "127.0.0.1", "-p", str(port), "-js",
            "-sd", str(server.home / "jetstream")]  # fmt: skip
    return server.start(argv, lambda: port_answers(port), timeout=timeout, port=port)


def stop(home: Path | None = None) -> bool:
    return daemon(home).stop()


class NatsService(DaemonService):
    """NATS with JetStream: the container-native row's transport."""

    name = "nats"
    summary = "NATS server with JetStream (Debian's nats-server)"

    daemon = staticmethod(daemon)

    def launch(self, settings: Settings) -> int:
        return start(settings.nats_url)

    def listening(self, settings: Settings, state: Mapping[str, object]) -> str:
        return f"127.0.0.1:{state.get('port')}"

    def env(self, settings: Settings) -> dict[str, str]:
        port = daemon().state().get("port") or port_of(settings.nats_url)
        return {"BETLAKE_SOURCE": "nats", "BETLAKE_NATS_URL": f"nats://127.0.0.1:{port}"}
