"""A file is cut into blocks of whole lines, each with the number of its first line: every byte
once, in order, whatever the line lengths, line ends and last line; each non-blank line is
validated once, under its own line number."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.progress import Progress

from betlake.core import ingest

LINES = [b"a" * 5, b"", b"b" * 40, b"c\r", b"d" * 3, b"", b"e" * 90, b"f"]


@pytest.mark.parametrize("chunk_bytes", [1, 7, 16, 50, 1000])
@pytest.mark.parametrize("last_newline", [True, False])
def test_blocks_hold_whole_lines(tmp_path: Path, monkeypatch, chunk_bytes, last_newline) -> None:
    content = b"\n".join(LINES) + (b"\n" if last_newline else b"")
    path = tmp_path / "t.jsonl"
    path.write_bytes(content)
    monkeypatch.setattr(ingest, "CHUNK_BYTES", chunk_bytes)
    with Progress(disable=True) as progress:
        blocks = list(ingest._chunks(path, progress))
    assert b"".join(block for _, block in blocks) == content
    line = 1
    for first, block in blocks:
        assert first == line
        assert block.endswith(b"\n") or block is blocks[-1][1]
        line += block.count(b"\n")
    origins = []
    for first, block in blocks:
        rejected = ingest._validate_chunk("file:t", first, block, 300, 300).rejected
        origins += rejected.column("origin").to_pylist()
    assert origins == [f"file:t:{n}" for n, line in enumerate(LINES, 1) if line.rstrip(b"\r")]
