"""The Dagster UI and daemon (``dagster dev``) as a detached local service on 127.0.0.1, at the
port of ``BETLAKE_DAGSTER_URL``, against the instance in ``DAGSTER_HOME``; its pid file and log
are under ``.betlake/dagster``."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from betlake.core.config import BetlakeError, Settings
from betlake.local.daemon import Daemon

DEFAULT_HOME = Path(".betlake") / "dagster"


def _port(settings: Settings) -> int:
    url = urlparse(settings.dagster_url)
    if url.hostname not in ("127.0.0.1", "localhost") or url.port is None:
        raise BetlakeError(
            f"BETLAKE_DAGSTER_URL must be http://127.0.0.1:PORT for the local UI, "
            f"got {settings.dagster_url}"
        )
    return url.port


_LOCATIONS = json.dumps(
    {
        "query": """{ workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
    }
)


def code_locations(url: str, timeout: float = 5) -> list[dict] | None:
    """The code locations the Dagster webserver at ``url`` knows (name, loadStatus, and the
    load error if any), or None while it does not answer."""
    request = urllib.request.Request(
        f"{url}/graphql", data=_LOCATIONS.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
    except (OSError, ValueError):
        return None
    return ((answer.get("data") or {}).get("workspaceOrError") or {}).get("locationEntries")


def ui_answers(url: str) -> bool:
    """Whether the webserver at ``url`` answers with every code location loaded."""
    entries = code_locations(url)
    return bool(entries) and all(entry["loadStatus"] == "LOADED" for entry in entries)


class DagsterUIService:
    """``dagster dev`` (webserver and daemon) for the code location ``betlake.definitions``."""

    name = "dagster"
    summary = "Dagster UI and daemon (dagster dev): the operator's console"

    def __init__(self, home: Path = DEFAULT_HOME) -> None:
        self.home = home

    def daemon(self) -> Daemon:
        return Daemon("dagster dev", self.home.resolve())

    def start(self, settings: Settings) -> str:
        if not (settings.dagster_home / "dagster.yaml").is_file():
            raise BetlakeError(f"no Dagster instance at {settings.dagster_home} (set DAGSTER_HOME)")
        port = _port(settings)
        argv = [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port),
                "-m", "betlake.definitions"]  # fmt: skip
        env = {**os.environ, "DAGSTER_HOME": str(settings.dagster_home)}
        pid = self.daemon().start(
            argv, lambda: ui_answers(settings.dagster_url), env=env, timeout=300, port=port
        )
        for entry in code_locations(settings.dagster_url) or []:
            error = entry["locationOrLoadError"] or {}
            if error.get("__typename") == "PythonError":
                self.stop(settings)
                raise BetlakeError(f"the code location {entry['name']} failed to load: "
                                   f"{error['message'].strip().splitlines()[-1]}")  # fmt: skip
        return f"dagster running on {settings.dagster_url} (pid {pid})"

    def stop(self, settings: Settings) -> bool:
        return self.daemon().stop(timeout=30)

    def status(self, settings: Settings) -> str:
        pid = self.daemon().pid()
        if pid is None:
            return f"dagster stopped (home {self.home})"
        port = self.daemon().state().get("port")
        url = f"http://127.0.0.1:{port}"
        answers = "" if ui_answers(url) else ", not answering yet"
        return f"dagster running on {url} (pid {pid}{answers})"

    def env(self, settings: Settings) -> dict[str, str]:
        return {"BETLAKE_DAGSTER_URL": settings.dagster_url,
                "DAGSTER_HOME": str(settings.dagster_home)}  # fmt: skip
