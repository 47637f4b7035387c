"""What the stream wrote, told to Dagster: each gold window it writes becomes a runless
materialization of that ``site_window_stats`` partition (metadata: pane, sites, events, GGR,
computed_at), and ``telemetry_raw`` is observed (rows, last event time, last arrival, the
stream group's consumer lag), so the UI shows every window whoever computed it, and the
bronze freshness check has its facts.

Off the publishing path: :func:`report_gold` only queues the rows; one background thread per
process notes their windows, and every few seconds reads those windows back from gold (all
sites, whoever wrote them) and writes them to the instance; it observes bronze every half
minute. When the instance cannot be reached, it logs, keeps the windows due and tries again
later: the stream never waits for Dagster.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg

from betlake.core.config import Settings
from betlake.core.contract import PARTITION_FORMAT, SITE_WINDOW_STATS, TELEMETRY_RAW
from betlake.core.lake import Lake
from betlake.core.status import bronze_facts, consumer_lag

log = logging.getLogger("betlake.stream")
PANES = ("LATE", "ON_TIME", "BATCH")  # a window written with several: the first found here
PANE_TAG = "betlake/pane"


class DagsterReporter:
    """One process's reporter to the Dagster instance at ``settings.dagster_home``."""

    def __init__(
        self, settings: Settings, flush_seconds: float = 2.0, observe_seconds: float = 30.0
    ) -> None:
        self.settings, self.lake = settings, Lake.of(settings)
        self.flush_seconds, self.observe_seconds = flush_seconds, observe_seconds
        self.inbox: queue.SimpleQueue[list[dict] | threading.Event | None] = queue.SimpleQueue()
        self.due: set[datetime] = set()  # windows written since they were last reported
        self.instance: dg.DagsterInstance | None = None
        self.observed_at = 0.0
        self.retry_at = 0.0
        self.failures = 0
        self.thread = threading.Thread(target=self._run, name="dagster-reporter", daemon=True)
        self.thread.start()

    def gold_written(self, rows: list[dict]) -> None:
        """Rows the stream just wrote to gold (called on the publishing path: only queues)."""
        self.inbox.put(rows)

    def flush(self, timeout: float = 30.0) -> bool:
        """Report everything queued so far and observe bronze now; whether it was done in time
        (False too if the instance could not be reached)."""
        done = threading.Event()
        self.inbox.put(done)
        return done.wait(timeout) and not self.due

    def close(self, timeout: float = 30.0) -> bool:
        """:meth:`flush`, then end the thread; whether everything was reported."""
        done = self.flush(timeout)
        self.inbox.put(None)
        self.thread.join(timeout)
        return done

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_seconds
        while True:
            try:
                item = self.inbox.get(timeout=max(0.0, next_flush - time.monotonic()))
            except queue.Empty:
                item = False
            if item is None:
                return
            if isinstance(item, list):
                self._take(item)
                continue
            forced = isinstance(item, threading.Event)
            if forced or time.monotonic() >= next_flush:
                self._report(forced)
                next_flush = time.monotonic() + self.flush_seconds
            if forced:
                item.set()

    def _take(self, rows: Iterable[dict]) -> None:
        self.due.update(row["window_start"] for row in rows)

    def _report(self, forced: bool) -> None:
        now = time.monotonic()
        observe = forced or now - self.observed_at >= self.observe_seconds
        if not (self.due or observe) or (not forced and now < self.retry_at):
            return
        try:
            instance = self._instance()
            windows = self._gold_windows() if self.due else {}
            for start in sorted(self.due):
                instance.report_runless_asset_event(self._materialization(start, windows[start]))
                self.due.discard(start)
            if observe:
                instance.report_runless_asset_event(self._observation())
                self.observed_at = now
        except Exception as error:  # the instance is away: keep what is due, try again later
            self.instance = None
            self.failures += 1
            wait = min(60.0, self.flush_seconds * 2**self.failures)
            self.retry_at = now + wait
            log.warning("Dagster instance at %s not reachable (%s); %d windows kept, "
                        "retrying in %.1fs", self.settings.dagster_home,
                        str(error).splitlines()[0] if str(error) else type(error).__name__,
                        len(self.due), wait)  # fmt: skip
            return
        self.failures = 0

    def _instance(self) -> dg.DagsterInstance:
        if self.instance is None:
            home = Path(self.settings.dagster_home)
            if not (home / "dagster.yaml").is_file():
                raise FileNotFoundError(f"no dagster.yaml in {home}")
            self.instance = dg.DagsterInstance.from_config(str(home))
        return self.instance

    def _gold_windows(self) -> dict[datetime, list[dict]]:
        """Gold's rows of the windows due, as they are now (all sites, whoever wrote them)."""
        width = timedelta(seconds=self.settings.window_seconds)
        rows = self.lake.scan_range(
            SITE_WINDOW_STATS,
            min(self.due),
            max(self.due) + width,
            ["window_start", "pane", "events", "active_players", "ggr_eur", "computed_at"],
        ).to_pylist()
        windows: dict[datetime, list[dict]] = {start: [] for start in self.due}
        for row in rows:
            if row["window_start"] in windows:
                windows[row["window_start"]].append(row)
        return windows

    def _materialization(self, start: datetime, rows: list[dict]) -> dg.AssetMaterialization:
        """A window as gold holds it: pane LATE if a site's row is a late pane, BATCH if a
        reprocessing has replaced it since."""
        pane = next((p for p in PANES if any(r["pane"] == p for r in rows)), "ON_TIME")
        return dg.AssetMaterialization(
            asset_key=SITE_WINDOW_STATS.name,
            partition=start.strftime(PARTITION_FORMAT),
            description=f"written by the stream ({pane} pane)",
            tags={PANE_TAG: pane},
            metadata={
                "pane": pane,
                "sites": len(rows),
                "events": sum(r["events"] for r in rows),
                "active_players": sum(r["active_players"] for r in rows),
                "ggr_eur": float(sum(r["ggr_eur"] or 0 for r in rows)),
                "computed_at": dg.MetadataValue.timestamp(max(r["computed_at"] for r in rows)),
            },
        )

    def _observation(self) -> dg.AssetObservation:
        facts = bronze_facts(self.lake)
        metadata: dict[str, object] = {"rows": facts.rows}
        if facts.last_event is not None:
            metadata["last_event_time"] = dg.MetadataValue.timestamp(facts.last_event)
        if facts.last_arrival is not None:  # what the freshness check reads
            metadata["dagster/last_updated_timestamp"] = dg.MetadataValue.timestamp(
                facts.last_arrival
            )
        lags = consumer_lag(self.settings)
        if lags is not None:  # how far the stream is behind Kafka (as betlake status says)
            metadata["consumer_lag"] = sum(lag.lag for lag in lags)
            metadata["consumer_lag_by_partition"] = {str(x.partition): x.lag for x in lags}
        return dg.AssetObservation(
            asset_key=TELEMETRY_RAW.name, description="observed by the stream", metadata=metadata
        )


_REPORTERS: dict[tuple[str, str], DagsterReporter] = {}
_LOCK = threading.Lock()


def reporter_for(settings: Settings) -> DagsterReporter | None:
    """This process's reporter for the settings' lake and instance (None when reporting is off)."""
    if not settings.dagster_reporting:
        return None
    key = (settings.lake, str(settings.dagster_home))
    with _LOCK:
        if key not in _REPORTERS:
            _REPORTERS[key] = DagsterReporter(settings)
        return _REPORTERS[key]


def report_gold(settings: Settings, rows: list[dict]) -> None:
    """Queue gold rows the stream wrote for the Dagster instance (returns at once)."""
    if rows and (reporter := reporter_for(settings)) is not None:
        reporter.gold_written(rows)


def close_reporters(timeout: float = 30.0) -> None:
    """Report what every reporter of this process holds, and end them (at the stream's end)."""
    with _LOCK:
        reporters = list(_REPORTERS.values())
        _REPORTERS.clear()
    for reporter in reporters:
        if not reporter.close(timeout):
            log.warning("not every window could be reported to Dagster at %s",
                        reporter.settings.dagster_home)  # fmt: skip
