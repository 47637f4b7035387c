"""A real Kafka broker for the integration tests, started once per session on free ports."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from betlake import broker


def free_port_pair() -> int:
    """A free 127.0.0.1 port whose successor (the controller port) is free too."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair found")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bootstrap address of a broker that lives as long as the test session."""
    home = tmp_path_factory.mktemp("kafka")
    bootstrap = f"127.0.0.1:{free_port_pair()}"
    broker.start(bootstrap, home=home, timeout=180)
    try:
        yield bootstrap
    finally:
        broker.stop(home=home)
