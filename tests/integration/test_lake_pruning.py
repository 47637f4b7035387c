"""Reads that open only the files that can hold their rows (the Delta log's partition values and
statistics) return exactly what a read of every file, filtered, returns."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from betlake.core.contract import NEWER_PANE, SITE_WINDOW_STATS
from betlake.core.lake import Lake

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 2, 22, 0, tzinfo=UTC)  # windows on both sides of midnight
FIVE = timedelta(minutes=5)


def panes(windows: list[int], events: int, pane: str) -> pa.Table:
    """One row per window number and site, ``events`` events each."""
    zero = {f.name: 0 for f in SITE_WINDOW_STATS.schema if not f.nullable}
    rows = []
    for window in windows:
        start = T0 + FIVE * window
        for site in ("s-1", "s-2"):
            rows.append(zero | {"window_start": start, "window_end": start + FIVE, "site_id": site,
                                "events": events, "pane": pane, "computed_at": datetime.now(UTC),
                                "window_date": start.date()})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=SITE_WINDOW_STATS.schema)


@pytest.fixture
def gold(tmp_path: Path) -> Lake:
    """A gold table of 48 windows over two days, a file per window."""
    lake = Lake(str(tmp_path / "lake"))
    for window in range(48):
        lake.append(SITE_WINDOW_STATS, panes([window], 10, "ON_TIME"))
    return lake


def test_a_range_read_returns_what_a_filtered_full_read_does(gold: Lake) -> None:
    everything = gold.scan(SITE_WINDOW_STATS)
    starts = everything.column("window_start")
    rng = random.Random(3)
    bounds = [(0, 48), (23, 25), (24, 25), (10, 10), (0, 1), (47, 48), (-5, 3), (40, 60)]
    bounds += [tuple(sorted(rng.sample(range(-2, 50), 2))) for _ in range(20)]
    for low, high in bounds:
        start, end = T0 + FIVE * low, T0 + FIVE * high
        inside = pc.and_(pc.greater_equal(starts, start), pc.less(starts, end))
        expected = sorted(everything.filter(inside).column("window_start").to_pylist())
        got = gold.scan_range(SITE_WINDOW_STATS, start, end).column("window_start").to_pylist()
        assert sorted(got) == expected, (low, high)


def test_upserts_find_the_rows_in_their_files(gold: Lake) -> None:
    """A merge and rows_to_upsert restricted to the touched files still see the stored rows:
    fuller panes replace them, no key is added twice."""
    fired = panes([0, 23, 24, 47], 20, "LATE")
    assert gold.rows_to_upsert(SITE_WINDOW_STATS, fired, NEWER_PANE).num_rows == 8
    assert gold.rows_to_upsert(SITE_WINDOW_STATS, panes([5], 10, "LATE"), NEWER_PANE).num_rows == 2
    assert gold.rows_to_upsert(SITE_WINDOW_STATS, panes([5], 9, "LATE"), NEWER_PANE).num_rows == 0
    gold.upsert(SITE_WINDOW_STATS, fired, update_when=NEWER_PANE)
    rows = gold.scan(SITE_WINDOW_STATS).to_pylist()
    assert len(rows) == 96
    late = {(r["window_start"], r["site_id"]) for r in rows if r["pane"] == "LATE"}
    assert late == {(T0 + FIVE * w, s) for w in (0, 23, 24, 47) for s in ("s-1", "s-2")}
    assert all(r["events"] == 20 for r in rows if r["pane"] == "LATE")


def test_a_kept_table_sees_every_other_writer(tmp_path: Path) -> None:
    """A lake keeps the tables it has opened and brings them forward: each read, write and
    merge still sees what another lake (another process, another thread) committed meanwhile,
    past the versions after which it opens a table afresh."""
    ours, theirs = Lake(str(tmp_path / "lake")), Lake(str(tmp_path / "lake"))
    ours.append(SITE_WINDOW_STATS, panes([0], 10, "ON_TIME"))
    for window in range(1, 70):
        theirs.append(SITE_WINDOW_STATS, panes([window], 10, "ON_TIME"))
        assert ours.scan(SITE_WINDOW_STATS).num_rows == 2 * (window + 1)
        if window % 10 == 0:  # our merge, over their rows: replaces, never adds a key twice
            ours.upsert(SITE_WINDOW_STATS, panes([window], 20, "LATE"), update_when=NEWER_PANE)
            events = theirs.scan_range(SITE_WINDOW_STATS, T0, T0 + FIVE * 70).column("events")
            assert len(events) == 2 * (window + 1)
            assert pc.sum(events).as_py() == 2 * 10 * (window + 1) + 2 * 10 * (window // 10)
    thread_rows: list[int] = []
    worker = threading.Thread(
        target=lambda: thread_rows.append(ours.scan(SITE_WINDOW_STATS).num_rows)
    )
    worker.start()
    worker.join()
    assert thread_rows == [2 * 70]


def test_a_lakes_threads_share_one_object_of_a_table(tmp_path: Path) -> None:
    """Threads appending through one lake at once use one object of the table, one thread at a
    time (brought forward once for all of them: with an object per thread, the soak's readers
    each replayed every commit), and lose no row and no writer's progress."""
    lake, objects, errors = Lake(str(tmp_path / "lake")), set(), []

    def writer(number: int) -> None:
        try:
            for window in range(5 * number, 5 * number + 5):
                lake.append(SITE_WINDOW_STATS, panes([window], 1, "ON_TIME"),
                            progress=(f"writer-{number}", window))  # fmt: skip
                with lake.held(SITE_WINDOW_STATS.name) as table:
                    objects.add(id(table))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and len(objects) == 1
    assert Lake(str(tmp_path / "lake")).scan(SITE_WINDOW_STATS).num_rows == 2 * 20
    assert [lake.progress(SITE_WINDOW_STATS, f"writer-{n}") for n in range(4)] == [4, 9, 14, 19]


def test_a_string_filter_reads_both_written_and_merged_files(tmp_path: Path) -> None:
    """Gold holds files written by a replace (string columns) and by merges (delta-rs writes
    string views): a query filtering a string column reads both (over a pyarrow dataset of
    both, pyarrow 25 could not apply it, and the demo's last query failed)."""
    lake = Lake(str(tmp_path / "lake"))
    lake.replace_windows(SITE_WINDOW_STATS, panes([0, 1], 5, "BATCH"), T0, T0 + 2 * FIVE)
    lake.upsert(SITE_WINDOW_STATS, panes([1], 7, "ON_TIME"), update_when=NEWER_PANE)
    lake.upsert(SITE_WINDOW_STATS, panes([2], 9, "LATE"), update_when=NEWER_PANE)
    query = "SELECT pane, sum(events) FROM site_window_stats WHERE pane <> 'BATCH' GROUP BY ALL"
    assert sorted(lake.connect().execute(query).fetchall()) == [("LATE", 18), ("ON_TIME", 14)]
