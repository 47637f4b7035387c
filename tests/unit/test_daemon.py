"""The detached-server helper every local stand-in uses: start once, answer, stop by its pid."""

import sys
import time

import pytest

from betlake.local.broker import free_port_pair
from betlake.local.daemon import Daemon, DaemonError, port_answers


def test_starts_once_answers_and_stops(tmp_path):
    port = free_port_pair()  # below the ephemeral range: no other process takes it meanwhile
    daemon = Daemon("http", tmp_path / "http")
    argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    pid = daemon.start(argv, lambda: port_answers(port), port=port)
    try:
        assert daemon.pid() == pid and port_answers(port)
        assert daemon.start(argv, lambda: port_answers(port)) == pid  # idempotent
        assert daemon.state()["port"] == port
    finally:
        assert daemon.stop()
    assert daemon.pid() is None
    deadline = time.monotonic() + 5
    while port_answers(port) and time.monotonic() < deadline:  # the kernel closes it after
        time.sleep(0.05)
    assert not port_answers(port)
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
