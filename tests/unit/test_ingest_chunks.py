"""A file is cut into blocks of whole lines, each with the number of its first line: every byte
once, in order, whatever the line lengths, line ends and last line; each non-blank line is
validated once, under its own line number."""

from __future__ import annotations

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
