"""Batch ingest of JSON lines files into ``telemetry_raw`` (valid) and ``telemetry_rejected``.

The file is read a chunk of whole lines at a time (memory stays flat whatever its size) and
validated with the same contract code as the stream, in worker processes (one per core) a few
chunks ahead of the writes, which stay in file order in this process; writes are keyed, so
ingesting a file twice adds nothing. A chunk goes to its worker as one block of bytes, split
into lines there: this process only finds the last line end of each block and counts lines.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from betlake.core.config import BetlakeError, Settings
from betlake.core.contract import (
    TELEMETRY_RAW,
    TELEMETRY_REJECTED,
    Origins,
    RawBatch,
    Validated,
    validate,
)
from betlake.core.lake import KeyIndex, Lake

CHUNK_BYTES = 32 << 20  # about 130,000 lines of telemetry


@dataclass
class IngestReport:
    """Counts of one ingest: lines read, events stored, duplicates skipped, lines rejected."""

    lines: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0

    def __str__(self) -> str:
        return (
            f"{self.lines} lines: {self.stored} events stored, {self.duplicates} duplicates "
            f"skipped, {self.rejected} rejected"
        )


def _chunks(path: Path, progress: Progress) -> Iterator[tuple[int, bytes]]:
    """(number of the first line, block of whole lines) of the file, about :data:`CHUNK_BYTES`
    a block (more if one line is longer)."""
    task = progress.add_task(path.name, total=path.stat().st_size)
    with path.open("rb") as handle:
        first = 1
        while block := handle.read(CHUNK_BYTES):
            end = block.rfind(b"\n") + 1
            while not end:  # no line end in it: a longer line, or the file's last one
                more = handle.read(CHUNK_BYTES)
                if not more:
                    end = len(block)
                    break
                found = more.find(b"\n")
                if found >= 0:
                    end = len(block) + found + 1
                block += more
            if end < len(block):
                handle.seek(end - len(block), 1)  # the next block starts at the next line
                block = block[:end]
            progress.update(task, advance=len(block))
            yield first, block
            first += block.count(b"\n")


def _validate_chunk(
    origin: str, first: int, block: bytes, window_seconds: int, max_clock_skew_seconds: int
) -> Validated:
    """One block's lines (numbered from ``first``) validated; blank lines are skipped."""
    lines = block.split(b"\n")
    if block.endswith(b"\n"):
        lines.pop()
    numbered = [(n, line.rstrip(b"\r")) for n, line in enumerate(lines, first)]
    numbered = [(n, line) for n, line in numbered if line]
    batch = RawBatch(
        payloads=[line for _, line in numbered],
        source="file",
        arrived_at=datetime.now(UTC),
        origins=Origins(f"{origin}:", [n for n, _ in numbered]),
    )
    return validate(
        batch, window_seconds=window_seconds, max_clock_skew_seconds=max_clock_skew_seconds
    )


class _InProcess(Executor):
    """Runs each task at once, here (a file of one chunk needs no worker processes)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _validated(settings: Settings, paths: list[Path], progress: Progress) -> Iterator[Validated]:
    """Every chunk of the files validated, in file order, up to a chunk per worker ahead of
    the caller."""
    workers = min(os.cpu_count() or 1, 4)
    several = workers > 1 and any(p.stat().st_size > CHUNK_BYTES for p in paths)
    pool = (
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        if several
        else nullcontext(_InProcess())
    )
    with pool as executor:
        pending: deque[Future] = deque()
        for path in paths:
            origin = f"file:{path.resolve()}"
            for first, block in _chunks(path, progress):
                pending.append(executor.submit(
                    _validate_chunk, origin, first, block, settings.window_seconds,
                    settings.max_clock_skew_seconds))  # fmt: skip
                while len(pending) > workers:
                    yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def ingest_files(settings: Settings, paths: list[Path], show_progress: bool = True) -> IngestReport:
    """Validate and store every line of ``paths``; returns the counts."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise BetlakeError(f"no such file: {', '.join(missing)}")
    lake = Lake.of(settings)
    stored_events = KeyIndex(lake, TELEMETRY_RAW)
    report = IngestReport()
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, disable=not show_progress, transient=True) as progress:
        for result in _validated(settings, paths, progress):
            fresh = stored_events.unseen(result.events)
            lake.append(TELEMETRY_RAW, fresh)
            stored_events.add(fresh)
            lake.insert_new(TELEMETRY_REJECTED, result.rejected)
            report.lines += result.events.num_rows + result.rejected.num_rows
            report.stored += fresh.num_rows
            report.duplicates += result.events.num_rows - fresh.num_rows
            report.rejected += result.rejected.num_rows
    return report
