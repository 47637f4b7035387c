"""The detached-server helper every local stand-in uses: start once, answer, stop by its pid."""

import socket
import sys

import pytest

from betlake.local.daemon import Daemon, DaemonError, port_answers


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_starts_once_answers_and_stops(tmp_path):
    port = _free_port()
    daemon = Daemon("http", tmp_path / "http")
    argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    pid = daemon.start(argv, lambda: port_answers(port), port=port)
    try:
        assert daemon.pid() == pid and port_answers(port)
        assert daemon.start(argv, lambda: port_answers(port)) == pid  # idempotent
        assert daemon.state()["port"] == port
    finally:
        assert daemon.stop()
    assert daemon.pid() is None and not port_answers(port)
    assert not daemon.stop()


def test_a_server_that_exits_is_reported_with_its_log(tmp_path):
    daemon = Daemon("broken", tmp_path / "broken")
    argv = [sys.executable, "-c", "import sys; print('no config here'); sys.exit(3)"]
    with pytest.raises(DaemonError, match=r"(?s)broken .* exited.*no config here"):
        daemon.start(argv, lambda: False, timeout=10)
    assert daemon.pid() is None


def test_a_reused_pid_is_not_ours(tmp_path):
    daemon = Daemon("gone", tmp_path / "gone")
    daemon.home.mkdir()
    daemon.pid_file.write_text("1\n")  # init: alive, but not what we started
    daemon.state_file.write_text('{"argv": ["some-server"]}')
    assert daemon.pid() is None and not daemon.stop()
