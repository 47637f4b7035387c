"""The stream and reprocessing write gold at the same moment: no commit error escapes, and a
streaming pane never replaces a row that reprocessing computed from more events."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from betlake.core.config import Settings
from betlake.core.contract import NEWER_PANE, SITE_WINDOW_STATS
from betlake.core.lake import Lake
from streaming.batch import reprocess
from tests.integration.test_site_window_stats import EXPECTED, A, C, gold_rows, ingest_scenario


def stream_panes(round_: int) -> pa.Table:
    """Panes as the stream would write them: one event short of the truth (a too-late event
    the stream never counted), ON_TIME first, LATE after."""
    rows = [
        row | {"events": row["events"] - 1, "pane": "ON_TIME" if round_ == 0 else "LATE",
               "computed_at": datetime.now(UTC)}
        for row in EXPECTED
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=SITE_WINDOW_STATS.schema)


def test_stream_and_reprocess_writers_on_the_same_windows(
    settings: Settings, loaded_lake: Lake, tmp_path: Path, caplog
) -> None:
    ingest_scenario(settings, tmp_path)
    errors: list[BaseException] = []
    start, reprocessed = threading.Barrier(2), threading.Event()

    def stream_writer() -> None:
        try:
            start.wait()
            lake, round_ = Lake.of(settings), 0
            while not reprocessed.is_set() or round_ < 3:  # before, during and after
                lake.upsert(SITE_WINDOW_STATS, stream_panes(round_), update_when=NEWER_PANE)
                round_ += 1
        except BaseException as error:
            errors.append(error)

    def reprocess_writer() -> None:
        try:
            start.wait()
            for _ in range(3):
                reprocess(settings, A, C)
        except BaseException as error:
            errors.append(error)
        finally:
            reprocessed.set()

    caplog.set_level(logging.INFO, logger="betlake.core.lake")
    writers = [threading.Thread(target=stream_writer), threading.Thread(target=reprocess_writer)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=300)

    assert errors == []
    final = gold_rows(loaded_lake)
    assert final == EXPECTED  # every row is the reprocessed one: it saw more events
    assert {row["pane"] for row in final} == {"BATCH"}
    conflicts = [r for r in caplog.records if "commit conflict" in r.getMessage()]
    print(f"{len(conflicts)} commit conflicts retried")


def test_rows_to_upsert_applies_the_rule_the_merge_applies(
    settings: Settings, loaded_lake: Lake
) -> None:
    """The stream publishes exactly the panes the gold merge writes (one NEWER_PANE rule)."""
    base = EXPECTED[0] | {"computed_at": datetime.now(UTC)}
    batch = base | {"events": 10, "pane": "BATCH"}
    on_time = base | {"site_id": "s-other", "events": 10, "pane": "ON_TIME"}
    loaded_lake.upsert(
        SITE_WINDOW_STATS, pa.Table.from_pylist([batch, on_time], schema=SITE_WINDOW_STATS.schema)
    )
    panes = [
        batch | {"events": 10, "pane": "LATE"},  # as many events as a reprocessing: kept out
        on_time | {"events": 10, "pane": "LATE"},  # as many as an earlier pane: replaces it
        base | {"site_id": "s-new", "pane": "ON_TIME"},  # a new key
    ]  # fmt: skip
    fired = pa.Table.from_pylist(panes, schema=SITE_WINDOW_STATS.schema)
    chosen = loaded_lake.rows_to_upsert(SITE_WINDOW_STATS, fired, NEWER_PANE)
    assert sorted(chosen.column("site_id").to_pylist()) == ["s-new", "s-other"]

    loaded_lake.upsert(SITE_WINDOW_STATS, fired, update_when=NEWER_PANE)
    written = {(r["site_id"], r["pane"]) for r in gold_rows(loaded_lake)}
    assert written == {(base["site_id"], "BATCH"), ("s-other", "LATE"), ("s-new", "ON_TIME")}
