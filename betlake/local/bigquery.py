"""The local BigQuery emulator (PyPI ``bqemulator``, a REST API on DuckDB) that the BigQuery
mirror of ``site_window_stats`` talks to in the demo and the tests.

It runs from a virtualenv of its own (its pins clash with the project's: DuckDB 1.5.5 against
2.0.1), made once in ``$BETLAKE_CACHE/bqemulator-<version>-venv``. bqemulator runs
``INSTALL spatial`` at start and refuses to start without it; DuckDB would download it, which is
not possible here, so the spatial and avro extensions come from their PyPI packages, installed
into the DuckDB extension folder of a private home (``<venv>/home``) the server runs with.

It listens on 127.0.0.1 at the port of ``BETLAKE_BIGQUERY_ENDPOINT`` (default 9050; its gRPC
port is picked free) and keeps its data (a persistent DuckDB file), pid file and log in
``.betlake/bigquery``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from betlake.core.config import BetlakeError, Settings
from betlake.local.daemon import Daemon, DaemonService, file_lock, port_answers

BQEMULATOR_VERSION = "1.4.0"
DUCKDB_VERSION = "1.5.5"  # the emulator's engine; the extension packages must match it
NUMPY_VERSION = "2.4.6"  # duckdb needs numpy for the Python UDFs bqemulator registers
DEFAULT_PORT = 9050
LOCAL_PROJECT = "betlake-local"
_INSTALL_EXTENSIONS = """
import importlib.util
from pathlib import Path

import duckdb

con = duckdb.connect()
for name in ("spatial", "avro"):
    package = Path(importlib.util.find_spec(f"duckdb_extension_{name}").origin).parent
    (path,) = package.glob(f"extensions/v{duckdb.__version__}/{name}.duckdb_extension")
    con.execute(f"INSTALL '{path}'")  # copied into $HOME/.duckdb/extensions/<ver>/<platform>
    con.execute(f"LOAD {name}")
"""


def daemon(home: Path | None = None) -> Daemon:
    """The emulator of ``home`` (default ``<cwd>/.betlake/bigquery``)."""
    return Daemon("bigquery emulator", (home or Path.cwd() / ".betlake" / "bigquery").resolve())


def endpoint(settings: Settings) -> str:
    """Where the emulator listens: 127.0.0.1 at the port of the settings' endpoint."""
    port = urlsplit(settings.bigquery_endpoint or "").port or DEFAULT_PORT
    return f"http://127.0.0.1:{port}"


def install(settings: Settings) -> Path:
    """The emulator's virtualenv, made once (under a lock; a broken one is made again)."""
    venv = settings.cache / f"bqemulator-{BQEMULATOR_VERSION}-venv"
    with file_lock(venv.with_name(venv.name + ".lock")):
        if (venv / ".complete").is_file():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        python = venv / "bin" / "python"
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             f"bqemulator=={BQEMULATOR_VERSION}", f"duckdb=={DUCKDB_VERSION}",
             f"numpy=={NUMPY_VERSION}", f"duckdb-extension-spatial=={DUCKDB_VERSION}",
             f"duckdb-extension-avro=={DUCKDB_VERSION}"],
            [str(python), "-c", _INSTALL_EXTENSIONS],
        ]  # fmt: skip
        (venv / "home").mkdir(parents=True, exist_ok=True)
        for step in steps:
            done = subprocess.run(
                step, env={**os.environ, "HOME": str(venv / "home")},
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode:
                tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
                raise BetlakeError(f"installing bqemulator into {venv} failed:\n{tail}")
        (venv / ".complete").touch()
    return venv


def answers(url: str) -> bool:
    """Whether a BigQuery emulator at ``url`` says it is ready."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return response.status == 200 and b'"ok"' in response.read()
    except OSError:
        return False


def start(settings: Settings, home: Path | None = None, timeout: float = 120) -> int:
    """Start the emulator (idempotent; installed on first use); return its pid."""
    url = endpoint(settings)
    port = urlsplit(url).port
    emulator = daemon(home)
    if emulator.pid() is None and port_answers(port):
        raise BetlakeError(f"port 127.0.0.1:{port} is already in use by another process")
    venv = install(settings)
    data = emulator.home / "data"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        str(venv / "bin" / "python"), "-m", "bqemulator", "start",
        "--rest-host", "127.0.0.1", "--rest-port", str(port),
        "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--persistent", "--data-dir", str(data),
        "--project", settings.bigquery_project or LOCAL_PROJECT,
        "--log-level", "warning", "--log-format", "console",
    ]  # fmt: skip
    env = {**os.environ, "HOME": str(venv / "home")}
    return emulator.start(argv, lambda: answers(url), env=env, timeout=timeout, endpoint=url)


class BigQueryService(DaemonService):
    """The local BigQuery emulator of :mod:`betlake.local.bigquery`."""

    name = "bigquery"
    summary = "BigQuery emulator (bqemulator in its own venv) for the mirror of gold"

    daemon = staticmethod(daemon)

    def launch(self, settings: Settings) -> int:
        return start(settings)

    def listening(self, settings: Settings, state: Mapping[str, object]) -> str:
        return str(state.get("endpoint"))

    def env(self, settings: Settings) -> dict[str, str]:
        return {"BETLAKE_BIGQUERY_ENDPOINT": endpoint(settings)}
