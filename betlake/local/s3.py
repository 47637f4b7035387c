"""The local S3-compatible object store: moto's server (PyPI ``moto[server]``, Apache 2.0; the
container-native row's MinIO is AGPL), for a lake at ``s3://<bucket>/lake``.

It listens on 127.0.0.1 at the port of ``BETLAKE_S3_ENDPOINT`` (default 9000), creates the lake's
bucket when it starts, and keeps its pid file and log in ``.betlake/s3``. moto keeps objects in
memory: stopping the server drops the lake. It answers conditional puts (``If-None-Match: *``),
which delta-rs's commits rely on for safe concurrent writers; moto checks the condition and then
stores the object, two steps, so the server handles one request at a time (``serve``) to make
that put-if-absent atomic, as S3 and MinIO make it.
"""

from __future__ import annotations

import importlib.util
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from betlake.core.config import BetlakeError, Settings
from betlake.local.daemon import Daemon, DaemonService, port_answers

DEFAULT_ENDPOINT = "http://127.0.0.1:9000"
DEFAULT_BUCKET = "betlake"
LOCAL_CREDENTIALS = "betlake"  # moto accepts any key pair; AWS's signing needs one


def daemon(home: Path | None = None) -> Daemon:
    """The server of ``home`` (default ``<cwd>/.betlake/s3``)."""
    return Daemon("s3 server", (home or Path.cwd() / ".betlake" / "s3").resolve())


def endpoint(settings: Settings) -> str:
    """Where the local server listens: 127.0.0.1 at the port of the settings' endpoint."""
    port = urlsplit(settings.s3_endpoint or DEFAULT_ENDPOINT).port or 9000
    return f"http://127.0.0.1:{port}"


def bucket(settings: Settings) -> str:
    """The lake's bucket when the lake is on S3, else ``betlake``."""
    if settings.lake.startswith("s3://"):
        return settings.lake.removeprefix("s3://").split("/", 1)[0]
    return DEFAULT_BUCKET


def start(settings: Settings, home: Path | None = None, timeout: float = 60) -> int:
    """Start the server (idempotent), create the lake's bucket; return the pid."""
    if importlib.util.find_spec("moto") is None:
        raise BetlakeError("the local S3 server needs moto: pip install -e '.[dev]'")
    url = endpoint(settings)
    port = urlsplit(url).port
    server = daemon(home)
    if server.pid() is None and port_answers(port):
        raise BetlakeError(f"port 127.0.0.1:{port} is already in use by another process")
    argv = [sys.executable, "-m", "betlake.local.s3", str(port)]
    pid = server.start(argv, lambda: port_answers(port), timeout=timeout, endpoint=url)
    create_bucket(url, bucket(settings))
    return pid


def serve(port: int) -> None:
    """Run moto's S3 on 127.0.0.1:``port`` in this process, one request at a time."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", port, app, threaded=False, request_handler=MotoRequestHandler)


def create_bucket(url: str, name: str) -> None:
    """Create the bucket unless it exists (moto takes unsigned requests)."""
    request = urllib.request.Request(f"{url}/{name}", method="PUT")
    try:
        urllib.request.urlopen(request, timeout=30).close()
    except urllib.error.HTTPError as error:
        if error.code != 409:  # BucketAlreadyOwnedByYou
            raise BetlakeError(f"creating bucket {name} on {url} failed: {error}") from None


def env(settings: Settings) -> dict[str, str]:
    """The settings that put the lake on the local server."""
    lake = settings.lake if settings.lake.startswith("s3://") else f"s3://{DEFAULT_BUCKET}/lake"
    return {
        "BETLAKE_LAKE": lake,
        "BETLAKE_S3_ENDPOINT": endpoint(settings),
        "BETLAKE_S3_REGION": settings.s3_region,
        "BETLAKE_S3_ACCESS_KEY_ID": LOCAL_CREDENTIALS,
        "BETLAKE_S3_SECRET_ACCESS_KEY": LOCAL_CREDENTIALS,
    }


class S3Service(DaemonService):
    """The local S3-compatible object store of :mod:`betlake.local.s3`."""

    name = "s3"
    summary = "S3-compatible object store (moto server) for a lake at s3://bucket/lake"

    daemon = staticmethod(daemon)

    def launch(self, settings: Settings) -> int:
        return start(settings)

    def listening(self, settings: Settings, state: Mapping[str, object]) -> str:
        return f"{state.get('endpoint')}, bucket {bucket(settings)}"

    def env(self, settings: Settings) -> dict[str, str]:
        return env(settings)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
