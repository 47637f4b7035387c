"""Batch ingest of JSON lines files into ``telemetry_raw`` (valid) and ``telemetry_rejected``.

The file is read a chunk of whole lines at a time (memory stays flat whatever its size) and
validated with the same contract code as the stream, in worker processes (one per core) a few
chunks ahead of the writes, which stay in file order in this process; writes are keyed, so
ingesting a file twice adds nothing. A worker is given a chunk as its place in the file and
reads it there: this process only finds the last line end of each block and counts lines. It
hands its events back as an Arrow file in a temporary folder, which this process memory-maps.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from betlake.core.config import BetlakeError, Settings
from betlake.core.contract import (
    TELEMETRY_RAW,
    TELEMETRY_REJECTED,
    Origins,
    RawBatch,
    Validated,
    validate,
)

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


def _chunks(path: Path) -> Iterator[tuple[int, int, int]]:
    """(number of the first line, first byte, end byte) of each block of whole lines of the
    file, about :data:`CHUNK_BYTES` a block (more if one line is longer). The file is memory-
    mapped: this process reads only the bytes it counts line ends in."""
    size = path.stat().st_size
    if not size:
        return  # (an empty file cannot be mapped)
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        first, start = 1, 0
        while start < size:
            end = data.rfind(b"\n", start, start + CHUNK_BYTES) + 1
            if end <= start:  # no line end in it: a longer line, or the file's last one
                end = data.find(b"\n", start + CHUNK_BYTES) + 1 or size
            yield first, start, end
            first += int(np.count_nonzero(np.frombuffer(data, np.uint8, end - start, start) == 10))
            start = end


def _validate_chunk(
    origin: str,
    first: int,
    path: Path,
    start: int,
    end: int,
    window_seconds: int,
    max_clock_skew_seconds: int,
    spool: str,
) -> tuple[str, pa.Table]:
    """The lines of bytes ``start`` to ``end`` of a file (numbered from ``first``) validated,
    blank lines skipped: the events spooled to an Arrow file in ``spool`` (see
    :func:`_spooled`), and the rejected rows."""
    with path.open("rb") as handle:
        handle.seek(start)
        block = handle.read(end - start)
    lines = block.split(b"\n")
    if block.endswith(b"\n"):
        lines.pop()
    numbers: Sequence[int] = range(first, first + len(lines))
    if b"\r" in block:
        lines = [line.rstrip(b"\r") for line in lines]
    if not all(lines):
        kept = [i for i, line in enumerate(lines) if line]
        lines, numbers = [lines[i] for i in kept], [numbers[i] for i in kept]
    batch = RawBatch(lines, "file", datetime.now(UTC), Origins(f"{origin}:", numbers))
    result = validate(
        batch, window_seconds=window_seconds, max_clock_skew_seconds=max_clock_skew_seconds
    )
    return _spooled(result.events, spool), result.rejected


def _spooled(table: pa.Table, directory: str) -> str:
    """``table`` written to an Arrow file in ``directory``: handing a file to another process
    costs a tenth of pickling the table through a pipe."""
    with (
        tempfile.NamedTemporaryFile(dir=directory, suffix=".arrow", delete=False) as file,
        pa.ipc.new_file(file, table.schema) as writer,
    ):
        writer.write_table(table)
    return file.name


def _unspooled(path: str) -> pa.Table:
    """The table of a :func:`_spooled` file, memory-mapped; the file is removed at once (its
    pages live as long as the table)."""
    table = pa.ipc.open_file(pa.memory_map(path)).read_all()
    os.unlink(path)
    return table


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
    # The workers are done (the pool closed) before their spool folder is removed.
    with tempfile.TemporaryDirectory(prefix="betlake-ingest-") as spool, pool as executor:
        pending: deque[tuple[Future, TaskID, int]] = deque()

        def oldest() -> Validated:
            future, task, size = pending.popleft()
            events, rejected = future.result()
            progress.update(task, advance=size)
            return Validated(_unspooled(events), rejected)

        for path in paths:
            origin = f"file:{path.resolve()}"
            task = progress.add_task(path.name, total=path.stat().st_size)
            for first, start, end in _chunks(path):
                pending.append((executor.submit(
                    _validate_chunk, origin, first, path, start, end, settings.window_seconds,
                    settings.max_clock_skew_seconds, spool), task, end - start))  # fmt: skip
                while len(pending) > workers:
                    yield oldest()
        while pending:
            yield oldest()


def ingest_files(settings: Settings, paths: list[Path], show_progress: bool = True) -> IngestReport:
    """Validate and store every line of ``paths``; returns the counts."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise BetlakeError(f"no such file: {', '.join(missing)}")
    from betlake.core.lake import KeyIndex, Lake  # here: the workers import this module

    lake = Lake.of(settings)
    stored_events = KeyIndex(lake, TELEMETRY_RAW)
    report = IngestReport()
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, disable=not show_progress, transient=True) as progress:
        for result in _validated(settings, paths, progress):
            fresh = stored_events.claim_new(result.events)
            lake.append(TELEMETRY_RAW, fresh)
            lake.insert_new(TELEMETRY_REJECTED, result.rejected)
            report.lines += result.events.num_rows + result.rejected.num_rows
            report.stored += fresh.num_rows
            report.duplicates += result.events.num_rows - fresh.num_rows
            report.rejected += result.rejected.num_rows
    return report
