"""The Dagster UI as an operator uses it, in a real browser: Playwright driving Debian's chromium
against a real ``dagster dev`` (webserver and daemon, started as the local service ``dagster``)
on a free 127.0.0.1 port, a temporary instance, and a lake the real stream filled from the
session's Kafka broker. Each step leaves a screenshot in ``test-artifacts/browser/``."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from betlake.cli import console
from betlake.cli.runs import run_assets
from betlake.core.config import BetlakeError, Settings
from betlake.core.contract import PARTITION_FORMAT, SITE_WINDOW_STATS
from betlake.core.kafka import ensure_topic, produce
from betlake.core.lake import Lake
from betlake.local.broker import free_port_pair
from betlake.local.dagster_ui import DagsterUIService
from betlake.local.generate import TelemetrySpec, generate_telemetry
from streaming.job import run_stream

pytestmark = [pytest.mark.integration, pytest.mark.browser]
PROJECT = Path(__file__).resolve().parents[2]
ARTEFACTS = PROJECT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
# Chromium as root on a closed network: no sandbox, no background connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
START = (datetime.now(UTC) - timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
HOURS = 2
UI_WAIT = 120_000  # ms: the shared machine is slow


class Console:
    """The UI under test: its settings, URL and instance."""

    def __init__(self, settings: Settings, instance: dg.DagsterInstance) -> None:
        self.settings, self.url, self.instance = settings, settings.dagster_url, instance
        self.lake = Lake(settings.lake)

    def windows(self) -> dict[datetime, int]:
        """The independent truth: on-time events per window, counted in bronze."""
        rows = self.lake.connect().execute(
            "SELECT window_start, count(*) FROM telemetry_raw WHERE NOT arrived_late GROUP BY 1"
        )
        return dict(rows.fetchall())


@pytest.fixture(scope="module")
def ui(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """Reference loaded by a Dagster run, two hours of telemetry through the real stream, then
    ``dagster dev`` started on a free port."""
    work = tmp_path_factory.mktemp("ui")
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home)
    reference = shutil.copytree(PROJECT / "data" / "reference", work / "reference")
    env = {
        "BETLAKE_LAKE": str(work / "lake"),
        "BETLAKE_REFERENCE": str(reference),
        "BETLAKE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "BETLAKE_TELEMETRY_TOPIC": "telemetry-ui",
        "BETLAKE_STATS_TOPIC": "stats-ui",
        "BETLAKE_PARTITIONS_START": f"{START:%Y-%m-%d}",
        "BETLAKE_DAGSTER_URL": f"http://127.0.0.1:{free_port_pair()}",
        "DAGSTER_HOME": str(home),
    }
    service = DagsterUIService(work / ".betlake" / "dagster")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        settings = Settings.from_env()
        run_assets(settings, ["bet_sites", "players", "fx_rates"], console)
        ensure_topic(settings, settings.telemetry_topic)
        spec = TelemetrySpec(count=3000, start=START, span=timedelta(hours=HOURS), seed=5,
                             late_fraction=0, unknown_fraction=0)  # fmt: skip
        for _ in produce(settings, settings.telemetry_topic,
                         list(generate_telemetry(spec, settings.reference))):  # fmt: skip
            pass
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            run_stream(settings, drain_when_idle=4)
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
        service.start(settings)
        try:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                yield Console(settings, instance)
        finally:
            service.stop(settings)


@pytest.fixture(scope="module")
def browser_page(ui: Console) -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (it installs Debian's chromium)")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_WAIT)
        page.add_locator_handler(  # Dagster's newsletter pop-up, whenever it shows up
            page.get_by_text("Join the Dagster community"),
            lambda: page.get_by_role("button", name="Skip").click(),
        )
        try:
            yield page
        finally:
            browser.close()


def visit(page: Page, url: str, shown: Callable[[Page], Locator], attempts: int = 3) -> None:
    """Open ``url`` until ``shown(page)`` is visible: on this shared machine a page now and then
    stays on its loading bar, and a reload brings it."""
    for attempt in range(attempts):
        page.goto(url)
        try:
            expect(shown(page)).to_be_visible(timeout=UI_WAIT / attempts)
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


def key(window: datetime) -> str:
    return window.strftime(PARTITION_FORMAT)


def test_asset_graph_shows_every_asset(ui: Console, browser_page: Page) -> None:
    page = browser_page
    visit(page, f"{ui.url}/assets/site_window_stats?view=lineage",
          lambda page: page.get_by_text("telemetry_raw", exact=True).first)  # fmt: skip
    for asset in ("bet_sites", "players", "fx_rates", "telemetry_raw", "site_window_stats"):
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    shot(page, "1-asset-graph")


def test_partition_bar_shows_the_stream_filled_windows(ui: Console, browser_page: Page) -> None:
    truth = ui.windows()
    assert len(truth) == HOURS * 12
    reported: dict[str, dg.AssetMaterialization] = {}
    for record in ui.instance.fetch_materializations(  # newest first
        dg.AssetKey(SITE_WINDOW_STATS.name), limit=10_000
    ).records:
        reported.setdefault(record.partition_key, record.asset_materialization)
    assert set(reported) == {key(w) for w in truth}  # every window the stream wrote, no other
    for window, events in truth.items():
        metadata = reported[key(window)].metadata
        assert metadata["events"].value == events
        assert metadata["pane"].value in ("ON_TIME", "LATE")

    page = browser_page
    visit(page, f"{ui.url}/assets/site_window_stats?view=partitions",
          lambda page: page.get_by_text(f"Materialized ({len(truth)})"))  # fmt: skip
    shot(page, "2-partitions-after-stream")


def test_backfill_launched_from_the_ui_runs_once_and_writes_batch(
    ui: Console, browser_page: Page
) -> None:
    first, last = START, START + timedelta(minutes=55)  # one hour: 12 windows
    page = browser_page
    visit(page, f"{ui.url}/assets/site_window_stats?view=partitions",
          lambda page: page.get_by_role("button", name="Materialize…"))  # fmt: skip
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Latest", exact=True).wait_for()  # partitions loaded
    dialog.get_by_role("button", name="Custom", exact=True).click()
    selection = dialog.locator("input").first
    selection.fill(f"[{key(first)}...{key(last)}]")
    selection.press("Enter")
    expect(dialog.get_by_text("12 partitions")).to_be_visible()
    shot(page, "3-backfill-dialog")
    dialog.get_by_role("button", name="Launch backfill").click()

    backfill = wait_for_backfill(ui.instance)
    runs = ui.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill}))
    assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS]
    visit(page, f"{ui.url}/runs/{runs[0].run_id}", lambda page: page.get_by_text("Success").first)
    shot(page, "4-backfill-run")

    gold = ui.lake.connect().execute(
        "SELECT window_start, pane, sum(events) FROM site_window_stats "
        "WHERE window_start >= $1 AND window_start < $2 GROUP BY 1, 2",
        [first, first + timedelta(hours=1)],
    )
    truth = ui.windows()
    assert {w: (pane, n) for w, pane, n in gold.fetchall()} == {
        w: ("BATCH", n) for w, n in truth.items() if first <= w <= last
    }


def wait_for_backfill(instance: dg.DagsterInstance, timeout: float = 600) -> str:
    """The id of the one backfill, once it has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        backfills = instance.get_backfills()
        if backfills and backfills[0].status.value not in ("REQUESTED", "CANCELING"):
            assert len(backfills) == 1
            return backfills[0].backfill_id
        time.sleep(2)
    raise AssertionError(f"the backfill did not finish in {timeout:g}s")


def test_sensor_and_schedules_are_running(ui: Console, browser_page: Page) -> None:
    page = browser_page
    visit(page, f"{ui.url}/automation", lambda page: page.get_by_text("late_data_sensor"))
    for name in ("late_data_sensor", "nightly_backfill", "reload_reference_schedule",
                 "maintain_lake_schedule"):  # fmt: skip
        row = page.locator("[class*=ListItem_listItem]", has=page.get_by_text(name, exact=True))
        expect(row.locator("[class*=ListItem_right] input[type=checkbox]")).to_be_checked()
    shot(page, "5-automation")


def test_reference_checks_shown_and_a_bad_file_fails_its_check(
    ui: Console, browser_page: Page
) -> None:
    page = browser_page
    visit(page, f"{ui.url}/assets/bet_sites?view=checks",
          lambda page: page.get_by_text("unique_site_id", exact=True).first)  # fmt: skip
    for check in ("unique_site_id", "known_currencies", "site_currencies_have_rates"):
        expect(page.get_by_text(check, exact=True).first).to_be_visible()
    expect(page.get_by_text("Succeeded")).to_have_count(3)
    shot(page, "6-reference-checks")

    sites = ui.settings.reference / "bet_sites.csv"
    lines = sites.read_text().splitlines()
    sites.write_text("\n".join([*lines, lines[1]]) + "\n")  # a site twice
    with pytest.raises(BetlakeError, match="unique_site_id"):
        run_assets(ui.settings, ["bet_sites"], console)
    page.reload()
    page.get_by_text("unique_site_id", exact=True).first.click()
    evaluation = page.get_by_text("Evaluation result").locator("xpath=..")
    expect(evaluation).to_contain_text("Failed")
    shot(page, "7-bad-reference-check")
