"""Where a benchmark's time goes: py-spy sampling this process while a block runs.

    with Profile(Path("stream.pyspy")) as profile:
        run_the_thing()
    print(profile.top(10))

Samples the thread holding the GIL (the Python work) 100 times a second, without
stopping the process; ``top`` ranks functions by the samples they were on top of the stack
(own time) and in the stack at all (total time), as shares of all samples.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


class Profile:
    """py-spy recording a process (this one by default) for as long as the ``with`` block
    runs."""

    def __init__(self, out: Path, pid: int | None = None, rate: int = 100) -> None:
        self.out, self.pid, self.rate = out, pid or os.getpid(), rate

    def __enter__(self) -> Profile:
        spy = Path(sys.executable).with_name("py-spy")
        self.recorder = subprocess.Popen(
            [str(spy), "record", "--pid", str(self.pid), "--rate", str(self.rate),
             "--format", "raw", "--gil", "--nonblocking", "--output", str(self.out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        return self

    def __exit__(self, *_: object) -> None:
        self.recorder.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        self.recorder.wait(timeout=60)

    def top(self, n: int = 10) -> str:
        """The ``n`` functions with the most own time, each with its total time."""
        own: Counter[str] = Counter()
        total: Counter[str] = Counter()
        samples = 0
        for line in self.out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [_name(frame) for frame in stack.split(";")]
            if not frames:
                continue
            samples += int(count)
            own[frames[-1]] += int(count)
            for frame in set(frames):
                total[frame] += int(count)
        rows = [f"  {'own':>6} {'total':>6}  function ({samples:,} samples)"]
        rows += [
            f"  {count / samples:6.1%} {total[name] / samples:6.1%}  {name}"
            for name, count in own.most_common(n)
        ]
        return "\n".join(rows)


def _name(frame: str) -> str:
    """``function (path/to/module.py:12)`` -> ``module.function``."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    return f"{Path(match['file']).stem}.{match['function']}"
