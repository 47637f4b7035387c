"""A file is cut into blocks of whole lines, each with the number of its first line: every byte
once, in order, whatever the line lengths, line ends and last line; each non-blank line is
validated once, under its own line number."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from betlake.core import ingest

LINES = [b"a" * 5, b"", b"b" * 40, b"c\r", b"d" * 3, b"", b"e" * 90, b"f"]


@pytest.mark.parametrize("chunk_bytes", [1, 7, 16, 50, 1000])
@pytest.mark.parametrize("last_newline", [True, False])
def test_blocks_hold_whole_lines(tmp_path: Path, monkeypatch, chunk_bytes, last_newline) -> None:
    content = b"\n".join(LINES) + (b"\n" if last_newline else b"")
    path = tmp_path / "t.jsonl"
    path.write_bytes(content)
    monkeypatch.setattr(ingest, "CHUNK_BYTES", chunk_bytes)
    chunks = list(ingest._chunks(path))
    blocks = [content[start:end] for _, start, end in chunks]
    assert b"".join(blocks) == content
    line = 1
    for (first, _, _), block in zip(chunks, blocks, strict=True):
        assert first == line
        assert block.endswith(b"\n") or block is blocks[-1]
        line += block.count(b"\n")
    origins = []
    for first, start, end in chunks:
        events, rejected = ingest._validate_chunk(
            "file:t", first, path, start, end, 300, 300, str(tmp_path)
        )
        assert ingest._unspooled(events).num_rows == 0
        origins += rejected.column("origin").to_pylist()
    assert not list(tmp_path.glob("*.arrow"))
    assert origins == [f"file:t:{n}" for n, line in enumerate(LINES, 1) if line.rstrip(b"\r")]


def test_an_empty_file_has_no_chunk(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    assert list(ingest._chunks(path)) == []


@pytest.mark.parametrize("main_module", ["betlake.core.ingest", "benchmarks.ingest"])
def test_the_workers_import_no_lake_or_beam(main_module: str) -> None:
    """A worker process imports the ingest module and the parent's main module before its first
    chunk, on each of two cores: Delta, DuckDB and Beam cost it about a second of CPU (about
    half the benchmark's workers' own import time) and it uses none of them."""
    heavy = ("deltalake", "duckdb", "apache_beam", "pyarrow.dataset", "dagster")
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, {main_module}; print(*sorted(sys.modules))"],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2],
    ).stdout.split()  # fmt: skip
    assert [name for name in heavy if name in loaded] == []
