"""Batch ingest of JSON lines files into ``telemetry_raw`` (valid) and ``telemetry_rejected``.

The file is read a chunk at a time (memory stays flat whatever its size) and validated with the
same contract code as the stream; writes are keyed, so ingesting a file twice adds nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from betlake.core.config import BetlakeError, Settings
from betlake.core.contract import TELEMETRY_RAW, TELEMETRY_REJECTED, RawBatch, validate
from betlake.core.lake import Lake

CHUNK_LINES = 200_000


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


def _chunks(path: Path, progress: Progress) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, lines) of the file, :data:`CHUNK_LINES` at a time."""
    task = progress.add_task(path.name, total=path.stat().st_size)
    with path.open("rb") as handle:
        first = 1
        while chunk := list(islice(handle, CHUNK_LINES)):
            progress.update(task, advance=sum(len(line) for line in chunk))
            yield first, [raw.rstrip(b"\r\n") for raw in chunk]
            first += len(chunk)


def ingest_files(settings: Settings, paths: list[Path], show_progress: bool = True) -> IngestReport:
    """Validate and store every line of ``paths``; returns the counts."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise BetlakeError(f"no such file: {', '.join(missing)}")
    lake = Lake.of(settings)
    report = IngestReport()
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, disable=not show_progress, transient=True) as progress:
        for path in paths:
            origin = f"file:{path.resolve()}"
            for first, lines in _chunks(path, progress):
                lines_with_content = [(n, line) for n, line in enumerate(lines, first) if line]
                batch = RawBatch(
                    payloads=[line for _, line in lines_with_content],
                    source="file",
                    arrived_at=datetime.now(UTC),
                    origins=[f"{origin}:{n}" for n, _ in lines_with_content],
                )
                result = validate(
                    batch,
                    window_seconds=settings.window_seconds,
                    max_clock_skew_seconds=settings.max_clock_skew_seconds,
                )
                stored = lake.insert_new(TELEMETRY_RAW, result.events)
                lake.insert_new(TELEMETRY_REJECTED, result.rejected)
                report.lines += len(batch.payloads)
                report.stored += stored
                report.duplicates += result.events.num_rows - stored
                report.rejected += result.rejected.num_rows
    return report
