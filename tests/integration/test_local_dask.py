"""``betlake local ... dask``: a real scheduler, dashboard and workers on 127.0.0.1, which a
reprocessing run uses, then stops."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from betlake.core.config import ConfigError, Settings
from betlake.core.lake import Lake
from betlake.local.broker import free_port_pair
from betlake.local.daemon import port_answers
from betlake.local.dask import DaskCluster, DaskService
from streaming.batch import reprocess
from tests.integration.test_site_window_stats import EXPECTED, C, gold_rows, ingest_scenario

pytestmark = pytest.mark.integration


def test_local_cluster_runs_a_backfill_and_stops(
    settings: Settings, loaded_lake: Lake, tmp_path: Path
) -> None:
    port = free_port_pair()  # the scheduler's, and its dashboard's
    on_dask = replace(settings, runner="dask", dask_scheduler=f"tcp://127.0.0.1:{port}")
    cluster = DaskCluster.of(on_dask, home=tmp_path / "dask")
    assert DaskService().env(on_dask) == {
        "BETLAKE_RUNNER": "dask",
        "BETLAKE_DASK_SCHEDULER": f"tcp://127.0.0.1:{port}",
    }
    try:
        assert f"tcp://127.0.0.1:{port}" in cluster.start(timeout=180)
        workers = os.cpu_count() or 1
        assert cluster.workers_connected() == workers
        assert f"{workers} workers connected" in cluster.status()
        assert port_answers(port + 1)  # the dashboard

        ingest_scenario(on_dask, tmp_path)
        report = reprocess(on_dask, datetime(2026, 11, 24, 23, 0, tzinfo=UTC), C)
        assert (report.events, report.gold_rows) == (15, 5)
        assert gold_rows(loaded_lake) == EXPECTED
    finally:
        assert cluster.stop()
    assert not port_answers(port) and not port_answers(port + 1)
    assert cluster.status().startswith("dask stopped")
    assert not cluster.stop()


def test_a_scheduler_that_does_not_answer_is_one_error_line(
    settings: Settings, loaded_lake: Lake
) -> None:
    port = free_port_pair()
    on_dask = replace(settings, runner="dask", dask_scheduler=f"tcp://127.0.0.1:{port}")
    with pytest.raises(ConfigError, match=rf"^no dask scheduler answers at tcp://127.0.0.1:{port}"):
        reprocess(on_dask, datetime(2026, 11, 24, 23, 0, tzinfo=UTC), C)
