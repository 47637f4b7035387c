"""Stop signals reach their handlers however the kernel delivers them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# The kernel gives a process-wide signal to the main thread unless that thread already has one
# pending; then another thread takes it. The script makes that happen on purpose.
SIGNAL_TO_ANOTHER_THREAD = textwrap.dedent(
    """
    import signal, threading
    from betlake.core.processes import wait_in_main_thread

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def worker():
        threading.Event().wait(0.3)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    threading.Thread(target=worker, daemon=True).start()
    wait_in_main_thread(stop)
    print("stopped")
    """
)


def test_a_signal_taken_by_another_thread_still_stops_the_wait() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_TO_ANOTHER_THREAD], capture_output=True, text=True, timeout=10
    )
    assert done.stdout.strip() == "stopped", done.stderr


def test_free_memory_below_memory_in_use_goes_back_to_the_system() -> None:
    """Nine blocks of ten freed leave free pages between the kept ones, which glibc keeps in
    the process until the heap is trimmed (the stream's RSS crept up so)."""
    script = """
from betlake.core.processes import give_back_free_memory
def anon_mib():
    status = open("/proc/self/status").read().split("RssAnon:")[1]
    return int(status.split()[0]) // 1024
blocks = [bytes(20_000) for _ in range(10_000)]  # 200 MB from the heap (not mmap)
kept = blocks[::10]
del blocks
before = anon_mib()
give_back_free_memory()
print(before, anon_mib())
"""
    before, after = map(int, subprocess.run([sys.executable, "-c", script], capture_output=True,
                                            text=True, check=True).stdout.split())  # fmt: skip
    assert before - after > 100, (before, after)
