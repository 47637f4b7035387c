"""Local Google Pub/Sub emulator (the one the Google Cloud SDK ships), for development and tests.

``gcloud beta emulators pubsub start`` runs the SDK's emulator jar; this starts that jar itself
(one JVM, memory capped, 127.0.0.1 only) so that it alone is the server process to stop. It
keeps its topics and subscriptions in memory; its log and pid file are under ``home`` (default
``<cwd>/.betlake/pubsub``). Without the SDK's ``pubsub-emulator`` component it fails, saying so.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from betlake.core.config import Settings
from betlake.local.daemon import Daemon, DaemonError, DaemonService, port_answers

DEFAULT_HOST = "127.0.0.1:8085"
JVM_OPTS = ("-Xmx384m", "-Xss1m", "-XX:+UseSerialGC")


def emulator_jar() -> Path:
    """The SDK's Pub/Sub emulator jar, or a :class:`DaemonError` saying what is missing."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise DaemonError(
            "the Pub/Sub emulator needs the Google Cloud SDK (gcloud): not found on PATH"
        )
    root = subprocess.run(
        [gcloud, "info", "--format=value(installation.sdk_root)"],
        capture_output=True, text=True, check=False, timeout=120,
    ).stdout.strip() or str(Path(gcloud).resolve().parents[1])  # fmt: skip
    jars = sorted((Path(root) / "platform" / "pubsub-emulator" / "lib").glob("*emulator*.jar"))
    if not jars:
        raise DaemonError(
            f"the Google Cloud SDK at {root} has no Pub/Sub emulator (install the component: "
            "gcloud components install pubsub-emulator, or Debian's "
            "google-cloud-cli-pubsub-emulator)"
        )
    return jars[-1]


def daemon(home: Path | None = None) -> Daemon:
    return Daemon("pubsub-emulator", (home or Path.cwd() / ".betlake" / "pubsub").resolve())


def start(host: str, home: Path | None = None, timeout: float = 120) -> int:
    """Start the emulator on ``host`` (127.0.0.1:PORT) unless it runs; returns its pid."""
    jar, java = emulator_jar(), shutil.which("java")
    if java is None:
        raise DaemonError("the Pub/Sub emulator needs Java 8+: java not found on PATH")
    port = int(host.rsplit(":", 1)[1])
    argv = [java, *JVM_OPTS, "-jar", str(jar), "--host=127.0.0.1", f"--port={port}"]
    return daemon(home).start(argv, lambda: port_answers(port), timeout=timeout, port=port)


def stop(home: Path | None = None) -> bool:
    return daemon(home).stop()


class PubSubService(DaemonService):
    """The Pub/Sub emulator: the GCP row's transport."""

    name = "pubsub"
    summary = "Google Pub/Sub emulator (from the Google Cloud SDK)"

    daemon = staticmethod(daemon)

    def launch(self, settings: Settings) -> int:
        return start(settings.pubsub_emulator_host or DEFAULT_HOST)

    def listening(self, settings: Settings, state: Mapping[str, object]) -> str:
        return f"127.0.0.1:{state.get('port')}"

    def env(self, settings: Settings) -> dict[str, str]:
        port = daemon().state().get("port")
        host = f"127.0.0.1:{port}" if port else settings.pubsub_emulator_host or DEFAULT_HOST
        return {"BETLAKE_SOURCE": "pubsub", "PUBSUB_EMULATOR_HOST": host}
