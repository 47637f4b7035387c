"""The stream and reprocessing write gold at the same moment: no commit error escapes, and a
streaming pane never replaces a row that reprocessing computed from more events."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from betlake.config import Settings
from betlake.contract import SITE_WINDOW_STATS
from betlake.lake import Lake
from streaming.batch import reprocess
from streaming.sinks import NEWER_PANE
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
            lake, round_ = Lake(settings.lake), 0
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

    caplog.set_level(logging.INFO, logger="betlake.lake")
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
