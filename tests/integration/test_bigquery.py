"""The BigQuery mirror of gold on a real BigQuery emulator (``betlake local start bigquery``)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from google.cloud.bigquery import Client, ScalarQueryParameter

import betlake.core.bigquery
from betlake.core.bigquery import mirror_range, run
from betlake.core.config import Settings
from betlake.core.contract import SITE_WINDOW_STATS
from betlake.core.lake import Lake
from betlake.core.windowing import to_utc
from betlake.defs.bigquery import bigquery_resource, site_window_stats_bigquery_asset
from betlake.defs.gold import window_partitions
from betlake.defs.resources import BetlakeResource
from betlake.local import bigquery as local_bigquery
from streaming.batch import reprocess
from tests.integration.test_site_window_stats import EXPECTED, A, B, C, ingest_scenario

TABLE = SITE_WINDOW_STATS.name
site_window_stats_bigquery = site_window_stats_bigquery_asset(window_partitions(Settings()))


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a BigQuery emulator living as long as this module's tests."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    home = tmp_path_factory.mktemp("bigquery")
    url = f"http://127.0.0.1:{port}"
    local_bigquery.start(Settings.from_env({"BETLAKE_BIGQUERY_ENDPOINT": url}), home, timeout=900)
    try:
        yield url
    finally:
        local_bigquery.daemon(home).stop()


@pytest.fixture
def bigquery(endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """The resource from the environment (as the code location builds it), a fresh dataset."""
    monkeypatch.setenv("BETLAKE_BIGQUERY_ENDPOINT", endpoint)
    monkeypatch.setenv("BETLAKE_BIGQUERY_DATASET", f"test_{uuid.uuid4().hex[:12]}")
    monkeypatch.delenv("BETLAKE_BIGQUERY_PROJECT", raising=False)
    return bigquery_resource(Settings.from_env())


@pytest.fixture
def client(bigquery) -> Iterator[Client]:
    with bigquery.get_client() as client:
        yield client


def gold(*rows: dict) -> pa.Table:
    stamped = [{**row, "computed_at": datetime(2026, 11, 25, 1, 0, tzinfo=UTC)} for row in rows]
    return pa.Table.from_pylist(stamped, schema=SITE_WINDOW_STATS.schema)


def mirrored(client: Client, dataset: str) -> list[tuple]:
    rows = client.query(
        f"SELECT window_start, site_id, events, stake_eur FROM `{dataset}.{TABLE}` "
        "ORDER BY window_start, site_id"
    ).result()
    return [(to_utc(r.window_start), r.site_id, r.events, r.stake_eur) for r in rows]


def keys(rows: list[dict]) -> list[tuple]:
    return [(r["window_start"], r["site_id"], r["events"], r["stake_eur"]) for r in rows]


def test_resource_from_the_environment() -> None:
    emulator_env = {"BETLAKE_BIGQUERY_ENDPOINT": "http://127.0.0.1:9050"}
    emulator = bigquery_resource(Settings.from_env(emulator_env))
    assert (emulator.project, emulator.dataset) == ("betlake-local", "betlake")
    google_env = {"BETLAKE_BIGQUERY_PROJECT": "p", "BETLAKE_BIGQUERY_DATASET": "d"}
    google = bigquery_resource(Settings.from_env(google_env))
    assert (google.project, google.dataset, google.endpoint) == ("p", "d", None)


def test_replacing_a_range_twice_leaves_one_copy(client: Client, bigquery) -> None:
    for _ in range(2):
        assert mirror_range(client, bigquery.dataset, TABLE, gold(*EXPECTED), A, C) == 5

    assert mirrored(client, bigquery.dataset) == keys(EXPECTED)
    tables = [t.table_id for t in client.list_tables(bigquery.dataset)]
    assert tables == [TABLE]  # the staging tables are gone


def test_rows_outside_the_range_are_untouched(client: Client, bigquery) -> None:
    before = {**EXPECTED[0], "window_start": A - timedelta(minutes=5), "window_end": A}
    after = {**EXPECTED[3], "window_start": C, "window_end": C + timedelta(minutes=5)}
    wide = (A - timedelta(minutes=5), C + timedelta(minutes=5))
    mirror_range(client, bigquery.dataset, TABLE, gold(before, *EXPECTED, after), *wide)
    changed = {**EXPECTED[3], "events": 99}

    assert mirror_range(client, bigquery.dataset, TABLE, gold(changed), B, C) == 1

    assert mirrored(client, bigquery.dataset) == keys([before, *EXPECTED[:3], changed, after])
    with pytest.raises(ValueError, match="outside"):
        mirror_range(client, bigquery.dataset, TABLE, gold(after), B, C)


def test_a_window_missing_from_the_new_rows_disappears(client: Client, bigquery) -> None:
    mirror_range(client, bigquery.dataset, TABLE, gold(*EXPECTED), A, C)

    assert mirror_range(client, bigquery.dataset, TABLE, gold(*EXPECTED[3:]), A, C) == 2
    assert mirrored(client, bigquery.dataset) == keys(EXPECTED[3:])
    assert mirror_range(client, bigquery.dataset, TABLE, gold(), A, C) == 0
    assert mirrored(client, bigquery.dataset) == []


def test_a_failed_load_leaves_the_range_as_it_was(
    client: Client, bigquery, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror_range(client, bigquery.dataset, TABLE, gold(*EXPECTED), A, C)
    load = betlake.core.bigquery._load

    def load_then_fail(*args: object) -> None:
        load(*args)
        raise ConnectionError("lost the connection after staging")

    monkeypatch.setattr(betlake.core.bigquery, "_load", load_then_fail)
    with pytest.raises(ConnectionError):
        mirror_range(client, bigquery.dataset, TABLE, gold(EXPECTED[0]), A, C)

    assert mirrored(client, bigquery.dataset) == keys(EXPECTED)
    assert [t.table_id for t in client.list_tables(bigquery.dataset)] == [TABLE]


@dataclass(frozen=True)
class WindowFigures:
    """Totals of one window: rows (sites), events and stake."""

    window_start: datetime
    rows: int
    events: int
    stake_eur: Decimal


def range_figures(
    client: Client, dataset: str, start: datetime, end: datetime
) -> list[WindowFigures]:
    """Per window of [start, end) of the mirror, in window order: rows, events, stake_eur."""
    job = run(
        client,
        f"""
        SELECT window_start, COUNT(*) AS n, SUM(events) AS events, SUM(stake_eur) AS stake_eur
        FROM `{client.project}.{dataset}.{TABLE}`
        WHERE window_start >= @start AND window_start < @end
        GROUP BY window_start ORDER BY window_start
        """,
        [ScalarQueryParameter("start", "TIMESTAMP", start),
         ScalarQueryParameter("end", "TIMESTAMP", end)],
    )  # fmt: skip
    return [
        WindowFigures(
            to_utc(row.window_start),
            int(row.n),
            int(row.events),
            Decimal(row.stake_eur).quantize(Decimal("0.01")),
        )
        for row in job.result()
    ]


def lake_figures(lake: Lake, start: datetime, end: datetime) -> list[WindowFigures]:
    rows = (
        lake.connect()
        .execute(
            f"""
            SELECT window_start, count(*), sum(events), sum(stake_eur) FROM {TABLE}
            WHERE window_start >= $1 AND window_start < $2 GROUP BY 1 ORDER BY 1
            """,
            [start, end],
        )
        .fetchall()
    )
    return [WindowFigures(to_utc(w), n, int(e), Decimal(s)) for w, n, e, s in rows]


def test_asset_mirrors_the_lake_figures_through_dagster(
    env: Settings, loaded_lake: Lake, instance, bigquery, client: Client, tmp_path: Path
) -> None:
    ingest_scenario(env, tmp_path)
    reprocess(env, A, C)
    stale = {**EXPECTED[0], "site_id": "s-gone"}  # in BigQuery only: the run must remove it
    mirror_range(client, bigquery.dataset, TABLE, gold(stale), A, C)

    for _ in range(2):  # a retry of the same range changes nothing
        result = dg.materialize(
            [site_window_stats_bigquery],
            instance=instance,
            resources={"betlake": BetlakeResource(), "bigquery": bigquery},
            tags={
                "dagster/asset_partition_range_start": "2026-11-24-23:55",
                "dagster/asset_partition_range_end": "2026-11-25-00:00",
            },
        )
        assert result.success
        (event,) = result.get_asset_materialization_events()[:1]
        assert event.materialization.metadata["rows"].value == 5
    materialized = instance.get_materialized_partitions(site_window_stats_bigquery.key)
    assert materialized == {"2026-11-24-23:55", "2026-11-25-00:00"}

    figures = range_figures(client, bigquery.dataset, A, C)
    assert figures == lake_figures(loaded_lake, A, C)
    assert [(f.rows, f.events, f.stake_eur) for f in figures] == [
        (3, 12, Decimal("21.21")),
        (2, 3, Decimal("17.00")),
    ]
    assert mirrored(client, bigquery.dataset) == keys(EXPECTED)
