"""The Delta log of the tables a stream commits to stays short, cleaned by one cleaner: commits
never delete log entries (two writers' clean-ups racing made committed appends raise), the
compactor's passes do, and a writer whose object of the table lags behind the deleted entries
still sees every row."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path

import pytest

from betlake.core.contract import SITE_WINDOW_STATS
from betlake.core.lake import Compactor, Lake
from tests.integration.test_lake_pruning import panes

pytestmark = pytest.mark.integration


def logged_versions(lake: Lake, name: str) -> list[int]:
    log_folder = Path(lake.uri(name)) / "_delta_log"
    return sorted(int(entry.name[:20]) for entry in log_folder.glob("*.json"))


def age_log(lake: Lake, name: str, seconds: float) -> None:
    """Make every log entry of the table ``seconds`` old."""
    then = time.time() - seconds
    for entry in (Path(lake.uri(name)) / "_delta_log").iterdir():
        os.utime(entry, (then, then))


def test_commits_keep_the_log_and_the_compactor_cleans_it_past_a_lagging_object(
    tmp_path: Path,
) -> None:
    name = SITE_WINDOW_STATS.name
    ours, theirs = Lake(str(tmp_path / "lake")), Lake(str(tmp_path / "lake"))
    ours.append(SITE_WINDOW_STATS, panes([0], 10, "ON_TIME"))
    assert ours.scan(SITE_WINDOW_STATS).num_rows == 2  # our object: at version 1
    for window in range(1, 100):  # versions 2-100; a checkpoint at 100
        theirs.append(SITE_WINDOW_STATS, panes([window], 10, "ON_TIME"))
    age_log(theirs, name, 120)  # past the table's minute of log
    theirs.append(SITE_WINDOW_STATS, panes([100], 10, "ON_TIME"))  # version 101
    assert logged_versions(theirs, name) == list(range(102))  # no commit deleted any

    compactor = Compactor(theirs, every_seconds=0)
    compactor.wrote(SITE_WINDOW_STATS, panes([100], 10, "ON_TIME"))  # due: a pass
    compactor.running.join(60)
    versions = logged_versions(theirs, name)
    assert versions[0] >= 99 and versions[-1] == theirs.version(name) > 101  # compacted, cleaned
    assert ours.scan(SITE_WINDOW_STATS).num_rows == 2 * 101
    assert ours.version(name) == theirs.version(name)


def test_appends_lose_nothing_and_fail_none_while_the_log_is_cleaned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two writers append while a third cleans the log as fast as it can, down to five seconds
    of history: every append succeeds once. With each writer also cleaning after its
    checkpoints, a few in a thousand raised after they had committed (a retry would have
    doubled their rows), and so did the cleaner. (A retention shorter than a commit takes
    is not safe even with one cleaner: a writer may read a checkpoint the cleaner deletes.)"""
    spec = dataclasses.replace(SITE_WINDOW_STATS, history="interval 5 seconds")
    root, appends = str(tmp_path / "lake"), 400
    Lake(root).ensure(spec)
    errors: list[tuple] = []  # (the window whose append failed, the error)
    appending = threading.Event()
    appending.set()

    def append(writer: int) -> None:
        lake = Lake(root)
        try:
            for window in range(writer * appends, (writer + 1) * appends):
                lake.append(spec, panes([window], 1, "ON_TIME"))
        except BaseException as error:
            errors.append((window, error))

    def clean() -> None:  # (a failed cleaning is logged: see the end)
        lake = Lake(root)
        while appending.is_set():
            lake.clean_log(spec.name)

    writers = [threading.Thread(target=append, args=(writer,)) for writer in range(2)]
    cleaner = threading.Thread(target=clean)
    for thread in [*writers, cleaner]:
        thread.start()
    for thread in writers:
        thread.join(timeout=300)
    appending.clear()
    cleaner.join(timeout=60)
    assert errors == [] and "cleaning the log" not in caplog.text
    stored = Lake(root).scan(spec)
    assert stored.num_rows == 2 * 2 * appends
    assert len(set(stored.column("window_start").to_pylist())) == 2 * appends
    assert logged_versions(Lake(root), spec.name)[0] >= 100  # it did clean
