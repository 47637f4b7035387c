"""Servers and jobs betlake starts stop when asked, even if started where signals are ignored.

A process started in the background can inherit SIGINT and SIGTERM as ignored, and a child
keeps that disposition; these helpers put the defaults back.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc's; absent elsewhere


def restore_default_signals() -> None:
    """Give the stop signals their default dispositions (also a ``preexec_fn`` for children)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_server(command: Sequence[str], env: Mapping[str, str]) -> int:
    """Run a server in its own process group until it exits; SIGINT/SIGTERM stop it cleanly."""
    server = subprocess.Popen(
        command, env=dict(env), start_new_session=True, preexec_fn=restore_default_signals
    )

    def stop(signum: int, _frame: object) -> None:
        os.killpg(server.pid, signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    return server.wait()


def wait_in_main_thread(event: threading.Event) -> None:
    """Wait for ``event`` in the main thread without shutting out signal handlers: the kernel
    may hand a process's signal to any of its threads, Python runs the handler in the main
    thread only, and a main thread blocked on a lock with no timeout is never woken to run it."""
    while not event.wait(0.5):
        pass


def give_back_free_memory() -> None:
    """Hand the C heap's free pages back to the system. glibc returns only the free memory at
    the top of a heap: what is freed below memory still in use stays in the process, so a
    long-running one's RSS creeps up as its heap fragments (the stream's soak: the heap's free
    part grew 4-5 MiB a minute). Nothing where the C library has no ``malloc_trim``."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
