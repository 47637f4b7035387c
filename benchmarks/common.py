"""What the benchmarks share, kept free of heavy imports: a benchmark whose worker processes
are spawned (ingest) has its main module, and so this, imported again in each of them."""

from __future__ import annotations

import os
import platform
import resource
from datetime import UTC, datetime
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
REFERENCE = PROJECT / "data" / "reference"
DAY = datetime(2026, 11, 24, tzinfo=UTC)


def machine() -> str:
    """The machine a benchmark ran on: cores, CPU model, memory and Python."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, Python {platform.python_version()}"


def own_cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children (worker processes)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
