"""Unit tests of the command line's argument and configuration errors: one line, no traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from betlake.cli import build_parser, main


@pytest.fixture(autouse=True)
def _clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("BETLAKE_"):
            monkeypatch.delenv(name)
    # An empty Dagster home: if validation ever let a run through, it could not start one.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "no-dagster-home"))


def one_line(text: str) -> str:
    assert "Traceback" not in text
    lines = text.strip("\n").splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        (["frobnicate"], ["invalid choice", "frobnicate"]),
        ([], ["command"]),
        (["reprocess", "--start", "nonsense", "--end", "2026-11-24"], ["--start", "nonsense"]),
        (["reprocess", "--start", "2026-11-24"], ["--end"]),
        (["generate", "--to", "x", "--late-fraction", "2"], ["--late-fraction", "2"]),
        (["generate", "--to", "x", "--duplicate-fraction", "abc"], ["--duplicate-fraction"]),
        (["generate", "--count", "-5"], ["--count", "-5"]),
        (["generate", "--to", "x", "--count", "0"], ["--count"]),
        (["generate", "--to", "x", "--span", "3 weeks"], ["--span"]),
        (["broker", "restart"], ["restart"]),
        (["query", "select 1", "--limit", "many"], ["--limit"]),
        (["query", "select 1", "--bogus"], ["--bogus"]),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], mentions: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    message = one_line(err)
    assert message.startswith("betlake")
    for word in mentions:
        assert word in message
    assert out == ""
    assert not (Path.cwd() / "x").exists()


def test_parser_builds_every_command() -> None:
    parser = build_parser()
    args = parser.parse_args(["reprocess", "--start", "2026-11-24", "--end", "2026-11-24T10:05Z"])
    assert args.command == "reprocess"
    assert args.start.isoformat() == "2026-11-24T00:00:00+00:00"
    assert args.end.isoformat() == "2026-11-24T10:05:00+00:00"


@pytest.mark.parametrize("value", ["abc", "420", "0", "-300"])
def test_bad_window_env_returns_1_with_one_line(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BETLAKE_WINDOW_SECONDS", value)
    assert main(["query", "select 1"]) == 1
    out, err = capsys.readouterr()
    message = one_line(err)
    assert message.startswith("betlake query: BETLAKE_WINDOW_SECONDS")
    assert value in message
    assert out == ""


@pytest.mark.parametrize(
    ("name", "value"), [("BETLAKE_RUNNER", "spark"), ("BETLAKE_PIPELINE_ARGS", "--job_name='a")]
)
def test_bad_runner_env_stops_the_stream_with_one_line(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["stream"]) == 1
    assert one_line(capsys.readouterr().err).startswith(f"betlake stream: {name}")


@pytest.mark.parametrize("value", ["[/oops]", "[bold]x", "[red]"])
def test_config_error_text_is_printed_literally(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A value that looks like console markup is shown as typed, never a traceback."""
    monkeypatch.setenv("BETLAKE_WINDOW_SECONDS", value)
    assert main(["query", "select 1"]) == 1
    message = one_line(capsys.readouterr().err)
    assert "BETLAKE_WINDOW_SECONDS" in message
    assert repr(value) in message


@pytest.mark.parametrize(
    ("start", "end", "mentions"),
    [
        ("2026-11-24T10:03:00Z", "2026-11-24T10:10:00Z", "--start 2026-11-24T10:03:00Z"),
        ("2026-11-24T10:00:00.5Z", "2026-11-24T10:10:00Z", "--start"),
        ("2026-11-24T10:00:00Z", "2026-11-24T10:07:00Z", "--end 2026-11-24T10:07:00Z"),
        ("2026-11-24T12:03:00+02:00", "2026-11-24T10:10:00Z", "--start 2026-11-24T10:03:00Z"),
    ],
)
def test_reprocess_off_window_boundary_returns_1(
    start: str, end: str, mentions: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reprocess", "--start", start, "--end", end]) == 1
    out, err = capsys.readouterr()
    message = one_line(err)
    assert message.startswith("betlake reprocess:")
    assert mentions in message
    assert "not on a window boundary" in message
    assert out == ""


def test_reprocess_boundary_follows_window_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BETLAKE_WINDOW_SECONDS", "600")
    argv = ["reprocess", "--start", "2026-11-24T10:05:00Z", "--end", "2026-11-24T10:20:00Z"]
    assert main(argv) == 1
    assert "--start 2026-11-24T10:05:00Z is not on a window boundary" in one_line(
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("start", "end", "mentions"),
    [
        ("2026-11-24T10:10:00Z", "2026-11-24T10:10:00Z", "--end must be after --start"),
        ("2026-11-24T10:10:00Z", "2026-11-24T10:00:00Z", "--end must be after --start"),
        ("2025-06-01", "2025-06-02", "before the first partition"),
        ("2026-11-24", "2999-01-01", "in the future"),
    ],
)
def test_reprocess_bad_range_returns_1(
    start: str, end: str, mentions: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reprocess", "--start", start, "--end", end]) == 1
    message = one_line(capsys.readouterr().err)
    assert message.startswith("betlake reprocess:")
    assert mentions in message
