"""What the operator reads: the stream's reports on a real Dagster instance (also when it is
away at first), ``betlake status`` and the quiet run commands, on real Delta tables."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from betlake.cli import main
from betlake.core.config import Settings
from betlake.core.contract import NEWER_PANE, PARTITION_FORMAT, SITE_WINDOW_STATS, TELEMETRY_RAW
from betlake.core.ingest import ingest_files
from betlake.core.lake import Lake
from betlake.local.generate import TelemetrySpec, generate_telemetry
from streaming.reporting import DagsterReporter

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parents[2]
START = datetime(2026, 11, 24, 10, tzinfo=UTC)


def write_gold(lake: Lake, *rows: tuple[datetime, str, str, int, str]) -> list[dict]:
    """Panes (window, site, pane, events, GGR) upserted into gold as the stream does."""
    zero = Decimal("0.00")
    full = [{"window_start": w, "window_end": w + timedelta(minutes=5), "site_id": site,
             "site_name": site, "brand": "B", "country": "GB", "events": events,
             "active_players": 1, "vip_players": 0, "sessions": 0, "bets": 0, "stake_eur": zero,
             "payout_eur": zero, "ggr_eur": Decimal(ggr), "deposits_eur": zero,
             "withdrawals_eur": zero, "unpriced_events": 0, "pane": pane,
             "computed_at": w + timedelta(minutes=6), "window_date": w.date()}
            for w, site, pane, events, ggr in rows]  # fmt: skip
    table = pa.Table.from_pylist(full, schema=SITE_WINDOW_STATS.schema)
    lake.upsert(SITE_WINDOW_STATS, table, update_when=NEWER_PANE)
    return full


def ingest_hour(settings: Settings, tmp_path: Path) -> None:
    """An hour of generated telemetry from a file into bronze."""
    spec = TelemetrySpec(
        count=400, start=START, span=timedelta(hours=1), seed=7, unknown_fraction=0
    )
    file = tmp_path / "telemetry.jsonl"
    file.write_text(
        "".join(line + "\n" for _, line in generate_telemetry(spec, settings.reference))
    )
    ingest_files(settings, [file])


def test_stream_reports_reach_dagster_once_the_instance_answers(
    settings: Settings, tmp_path: Path
) -> None:
    lake = Lake(settings.lake)
    ingest_hour(settings, tmp_path)
    reporter = DagsterReporter(settings, flush_seconds=0.2)
    first, second = START, START + timedelta(minutes=5)
    reporter.gold_written(write_gold(lake, (first, "s-gb", "ON_TIME", 5, "10.50")))
    reporter.gold_written(
        write_gold(lake, (second, "s-gb", "ON_TIME", 3, "1.00"), (second, "s-ie", "LATE", 4, "2"))
    )
    reporter.gold_written(write_gold(lake, (first, "s-gb", "LATE", 6, "11.50")))  # a later pane

    assert not reporter.flush()  # no instance at DAGSTER_HOME yet: kept, nothing lost

    settings.dagster_home.mkdir(exist_ok=True)
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", settings.dagster_home)
    assert reporter.flush()

    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        records = instance.fetch_materializations(
            dg.AssetKey(SITE_WINDOW_STATS.name), limit=10
        ).records
        reported = {r.partition_key: r.asset_materialization.metadata for r in records}
        assert len(records) == 2  # one per window: the windows due are reported as gold has them
        assert {k: (m["pane"].value, m["events"].value, m["ggr_eur"].value, m["sites"].value)
                for k, m in reported.items()} == {
            f"{first:{PARTITION_FORMAT}}": ("LATE", 6, 11.5, 1),
            f"{second:{PARTITION_FORMAT}}": ("LATE", 7, 3.0, 2),
        }  # fmt: skip
        observed = instance.fetch_observations(dg.AssetKey(TELEMETRY_RAW.name), limit=1).records
        metadata = observed[0].asset_observation.metadata
        rows, last_event, last_arrival = (
            lake.connect()
            .execute("SELECT count(*), max(event_time), max(ingest_time) FROM telemetry_raw")
            .fetchone()
        )
        assert metadata["rows"].value == rows > 0
        # (the Delta log keeps its statistics to the millisecond)
        assert metadata["last_event_time"].value == pytest.approx(last_event.timestamp(), abs=1e-3)
        assert metadata["dagster/last_updated_timestamp"].value == pytest.approx(
            last_arrival.timestamp(), abs=1e-3
        )


def test_status_and_a_quiet_reprocess(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    settings.dagster_home.mkdir()
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", settings.dagster_home)
    for name, value in {
        "BETLAKE_LAKE": settings.lake,
        "BETLAKE_REFERENCE": str(settings.reference),
        "BETLAKE_KAFKA_BOOTSTRAP": "127.0.0.1:9",  # nobody answers there
        "BETLAKE_PARTITIONS_START": "2026-11-01",
        "DAGSTER_HOME": str(settings.dagster_home),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert main(["reference"]) == 0
    ingest_hour(settings, tmp_path)
    lake = Lake(settings.lake)
    rows, windows = (
        lake.connect()
        .execute("SELECT count(*), count(DISTINCT window_start) FROM telemetry_raw")
        .fetchone()
    )
    capsys.readouterr()

    assert main(["status"]) == 0
    screen = " ".join(capsys.readouterr().out.split())
    assert "kafka kafka stopped" in screen
    assert "dagster dagster stopped" in screen
    assert "Kafka at 127.0.0.1:9 does not answer" in screen
    assert f"telemetry_raw {rows:,} rows" in screen
    assert f"pending corrections {windows} windows: [2026-11-24 10:00, 11:00)" in screen
    assert "last reprocessing none yet" in screen

    assert main(["reprocess", "--start", "2026-11-24T10:00", "--end", "2026-11-24T11:00"]) == 0
    out = capsys.readouterr().out
    events = lake.connect().execute("SELECT sum(events) FROM site_window_stats").fetchone()[0]
    assert events == rows  # every event of the hour counted, as bronze holds them
    summary = " ".join(out.split())
    assert "DEBUG" not in out and len(out.strip().splitlines()) <= 4  # one summary, wrapped
    assert (
        f"recomputed 12 windows [2026-11-24 10:00, 2026-11-24 11:00) UTC: {events:,} events"
        in summary
    )
    run_id = re.search(r"run ([0-9a-f-]{36}) http://127\.0\.0\.1:3000/runs/\1", summary).group(1)

    assert main(["status"]) == 0
    screen = " ".join(capsys.readouterr().out.split())
    assert "pending corrections none" in screen
    assert "SUCCESS 2026-11-24-10:00...2026-11-24-10:55" in screen
    assert f"the last reprocessing run: http://127.0.0.1:3000/runs/{run_id}" in screen
