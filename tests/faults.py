"""Fault-injection helpers shared by the stream fault tests and ``benchmarks/fault_campaign.py``:
the job as a subprocess (its own process group), a paced producer that logs what it sent by
category (to Kafka, NATS JetStream or Pub/Sub, whichever the settings' source is), and an
accounting of the lake and the stats topic against an independent truth (the producer's log, and
a DuckDB query over bronze's on-time rows)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import IO, Protocol

from confluent_kafka import Producer

from betlake.core.config import Settings
from betlake.core.contract import SITE_WINDOW_STATS, TELEMETRY_RAW, TELEMETRY_REJECTED
from betlake.core.kafka import (
    client_config,
    committed_offsets,
    end_offsets,
    ensure_topic,
    partitions_of,
    stats_message,
    stream_consumer,
)
from betlake.core.lake import Lake
from betlake.core.reference import REFERENCE_TABLES, read_reference_csv
from betlake.core.windowing import epoch_us
from streaming.sources import stream_source
from tests.kafka_topics import read_latest

PROJECT = Path(__file__).resolve().parents[1]
REFERENCE = PROJECT / "data" / "reference"
PARTITIONS = 4
# Small windows so that on-time, late and too-late data all happen within two minutes.
FAULT_ENV = {
    "BETLAKE_WINDOW_SECONDS": "60",
    "BETLAKE_ALLOWED_LATENESS_SECONDS": "30",
    "BETLAKE_MAX_OUT_OF_ORDERNESS_SECONDS": "5",
    "BETLAKE_IDLE_TIMEOUT_SECONDS": "10",
}
FIGURES = [f.name for f in SITE_WINDOW_STATS.schema if f.name not in ("pane", "computed_at",
                                                                      "window_date")]  # fmt: skip
# what the producer sends (see PacedProducer._behind for how far behind the wall clock)
IN_ORDER, OUT_OF_ORDER, LATE, TOO_LATE = "in_order", "out_of_order", "late", "too_late"
DUPLICATE, MALFORMED = "duplicate", "malformed"
ON_TIME = (IN_ORDER, OUT_OF_ORDER, LATE)  # never flagged arrived_late by any sane watermark
TOO_LATE_MARGIN = 40  # seconds: a too-late event's window closed this long before the watermark
WAITED = 5  # seconds: an event stored this long after it was sent waited for a (re)started job


# ------------------------------------------------------------------------- the job


def fault_settings(lake: str, bootstrap: str, name: str, **env: str) -> Settings:
    """Settings for a fault run: its lake, the project's reference, topics of its own."""
    return Settings.from_env({
        **FAULT_ENV, "BETLAKE_LAKE": lake, "BETLAKE_REFERENCE": str(REFERENCE),
        "BETLAKE_KAFKA_BOOTSTRAP": bootstrap, "BETLAKE_TELEMETRY_TOPIC": f"telemetry-{name}",
        "BETLAKE_STATS_TOPIC": f"stats-{name}", **env,
    })  # fmt: skip


def prepare(settings: Settings) -> None:
    """Load the settings' reference CSV files into the lake and create the telemetry topic
    (its stream, its subscription) on the settings' source."""
    lake = Lake.of(settings)
    for spec in REFERENCE_TABLES:
        lake.overwrite(spec, read_reference_csv(spec, settings.reference, datetime.now(UTC)))
    if settings.source == "kafka":
        ensure_topic(settings, settings.telemetry_topic, partitions=PARTITIONS)
    else:
        assert settings.source_shards == PARTITIONS, "the producer keys players to 4 shards"
        stream_source(settings).prepare()


def stream_env(settings: Settings) -> dict[str, str]:
    """The environment that gives ``betlake stream`` these settings."""
    return {
        **os.environ,
        "BETLAKE_LAKE": settings.lake,
        "BETLAKE_REFERENCE": str(settings.reference),
        "BETLAKE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "BETLAKE_TELEMETRY_TOPIC": settings.telemetry_topic,
        "BETLAKE_STATS_TOPIC": settings.stats_topic,
        "BETLAKE_WINDOW_SECONDS": str(settings.window_seconds),
        "BETLAKE_ALLOWED_LATENESS_SECONDS": str(settings.allowed_lateness_seconds),
        "BETLAKE_MAX_OUT_OF_ORDERNESS_SECONDS": str(settings.max_out_of_orderness_seconds),
        "BETLAKE_IDLE_TIMEOUT_SECONDS": str(settings.idle_timeout_seconds),
        "BETLAKE_MAX_CLOCK_SKEW_SECONDS": str(settings.max_clock_skew_seconds),
        "BETLAKE_SOURCE": settings.source,
        "BETLAKE_SOURCE_SHARDS": str(settings.source_shards),
        "BETLAKE_ACK_DEADLINE_SECONDS": str(settings.ack_deadline_seconds),
        "BETLAKE_NATS_URL": settings.nats_url,
        "BETLAKE_PUBSUB_PROJECT": settings.pubsub_project,
        **(
            {"PUBSUB_EMULATOR_HOST": settings.pubsub_emulator_host}
            if settings.pubsub_emulator_host
            else {}
        ),
    }


def start_job(
    settings: Settings,
    drain_when_idle: float | None = None,
    output: IO[str] | int = subprocess.PIPE,
) -> subprocess.Popen:
    """``python -m betlake.cli stream`` in a process group of its own (its pid is the group)."""
    command = [sys.executable, "-m", "betlake.cli", "stream"]
    if drain_when_idle is not None:
        command += ["--drain-when-idle", str(drain_when_idle)]
    return subprocess.Popen(
        command, cwd=PROJECT, env=stream_env(settings), stdout=output, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip


def group_members(pgid: int) -> list[str]:
    """The processes of process group ``pgid``: "pid state command" each."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            found.append(f"{entry.name} {fields[0]} {command.strip()[:120]}")
    return found


def kill_group(job: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the job's whole process group (if anything of it is left)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(job.pid, sig)


def wait_group_empty(pgid: int, timeout: float) -> list[str]:
    """Wait until process group ``pgid`` is empty; returns what is left of it."""
    deadline = time.monotonic() + timeout
    while (left := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


class JobRuns:
    """The job runs of a fault run, each in its own process group with its output in a file."""

    def __init__(self, settings: Settings, folder: Path, drain_when_idle: float | None) -> None:
        self.settings, self.folder, self.drain = settings, folder, drain_when_idle
        self.runs: list[tuple[subprocess.Popen, Path]] = []

    def start(self) -> subprocess.Popen:
        log = self.folder / f"job-{len(self.runs) + 1}.log"
        with log.open("w") as output:
            job = start_job(self.settings, self.drain, output)
        self.runs.append((job, log))
        return job

    def output(self, job: subprocess.Popen) -> str:
        return next(log for j, log in self.runs if j is job).read_text(errors="replace")

    def kill_all(self) -> None:
        """SIGKILL whatever is left of every run's process group."""
        for job, _ in self.runs:
            kill_group(job)
            job.wait(10)


# ------------------------------------------------------------------------- the producer


@dataclass(frozen=True)
class Workload:
    """A paced run of ``seconds``: ``rate`` messages/s of mostly in-order events, with
    out-of-order, late (behind the watermark, within the allowed lateness) and too-late (past
    window end + allowed lateness) events, duplicates and malformed messages; too-late events
    are sent only at moments in ``too_late_at`` (pairs of seconds since the start). With
    ``tail``, its last 30 s are sparse late events on two partitions only (2 a second), then one
    in-order event on every partition: a drain must wait for those."""

    seconds: float = 140
    rate: float = 100
    seed: int = 7
    out_of_order: float = 0.12
    late: float = 0.04
    duplicate: float = 0.03
    malformed: float = 0.006
    too_late_per_second: float = 1.0
    too_late_at: tuple[tuple[float, float], ...] = ((30, 50), (95, 1e9))
    tail: bool = True
    players: int = 600

    @classmethod
    def quiet(cls, seconds: float = 70, rate: float = 60) -> Workload:
        """In-order events only (and duplicates and malformed messages)."""
        return cls(seconds=seconds, rate=rate, out_of_order=0, late=0, too_late_per_second=0,
                   tail=False)  # fmt: skip


@dataclass
class Sent:
    """One message the producer sent."""

    category: str
    key: str
    partition: int
    line: str
    event_id: str | None = None  # None for a malformed message
    event_us: int | None = None
    reason: str | None = None  # the rejection reason a malformed message must get
    event: dict | None = None
    planned: float = 0.0  # seconds after the producer's start
    sent_at: float = 0.0  # wall clock (time.time())
    offset: int | None = None  # Kafka: its offset; NATS: its stream sequence (0: a duplicate)
    origin: str | None = None  # where bronze says it came from (None: dropped as a duplicate)
    delivered: bool = False
    delivered_at: float = 0.0  # wall clock of its delivery report


_TIME_FORMATS = (0.6, 0.8)
_PLUS_TWO = timezone(timedelta(hours=2))
_KINDS = ["session_start", "bet_placed", "bet_settled", "deposit", "withdrawal", "page_view",
          "heartbeat", "session_end"]  # fmt: skip
_WEIGHTS = [10, 30, 20, 6, 3, 18, 9, 4]
_MALFORMED = (  # (how the message is spoiled, the reason the contract gives it)
    (lambda e: json.dumps(e)[:-9], "malformed_json"),
    (lambda e: json.dumps({k: v for k, v in e.items() if k != "player_id"}),
     "missing_field:player_id"),
    (lambda e: json.dumps({**e, "site_id": ""}), "missing_field:site_id"),
    (lambda e: json.dumps({**e, "event_type": "jackpot"}), "bad_event_type"),
    (lambda e: json.dumps({**e, "event_time": "yesterday"}), "bad_event_time"),
    (lambda e: json.dumps({**e, "event_type": "deposit", "amount": -25}), "bad_amount"),
    (lambda e: json.dumps({**e, "event_time": "2099-01-01T00:00:00Z"}), "future_event"),
)  # fmt: skip


def partition_of(key: str, partitions: int = PARTITIONS) -> int:
    """The partition of a player's messages (every message of a key goes to one partition)."""
    return zlib.crc32(key.encode()) % partitions


class Sender(Protocol):
    """Sends the paced producer's messages to one transport, noting where each landed."""

    def send(self, sent: Sent) -> None: ...
    def wait(self, seconds: float) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class KafkaSender:
    """A plain idempotent producer (betlake's reports failures only; this log needs offsets),
    each message to its key's partition."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.telemetry_topic
        self.out = Producer(client_config(settings, acks="all", **{"enable.idempotence": True}))

    def send(self, sent: Sent) -> None:
        def delivered(error, message, sent: Sent = sent) -> None:
            if error is None:
                sent.offset, sent.delivered = message.offset(), True
                sent.delivered_at = time.time()
                sent.origin = f"kafka:{self.topic}:{message.partition()}:{message.offset()}"

        self.out.produce(self.topic, sent.line.encode(), sent.key.encode(),
                         partition=sent.partition, on_delivery=delivered)  # fmt: skip
        self.out.poll(0)

    def wait(self, seconds: float) -> None:
        self.out.poll(0)
        time.sleep(seconds)

    def flush(self) -> None:
        if self.out.flush(60):
            raise RuntimeError(f"{len(self.out)} messages were not delivered to {self.topic}")

    def close(self) -> None:
        pass


class NatsSender:
    """JetStream publishes, each to its key's shard, Nats-Msg-Id = event_id (a duplicate sent
    within two minutes is dropped by the server: no sequence, no origin)."""

    def __init__(self, settings: Settings) -> None:
        from betlake.core.nats import NatsClient, stream_name

        self.client, self.stream = NatsClient(settings), stream_name(settings)

    def send(self, sent: Sent) -> None:
        for _, sequence, _ in self.client.publish([(sent.key, sent.line.encode())]):
            sent.offset, sent.delivered = sequence, True
            sent.delivered_at = time.time()
            sent.origin = f"nats:{self.stream}:{sequence}" if sequence else None

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.client.close()


class PubSubSender:
    """Pub/Sub publishes (no partitions, no order: the key is an attribute)."""

    def __init__(self, settings: Settings) -> None:
        from betlake.core.pubsub import publisher, topic_path

        self.topic, self.name = topic_path(settings), settings.telemetry_topic
        self.client = publisher(settings)
        self.pending: list[tuple[Sent, object]] = []

    def send(self, sent: Sent) -> None:
        self.pending.append((sent, self.client.publish(self.topic, sent.line.encode(),
                                                       key=sent.key)))  # fmt: skip

    def wait(self, seconds: float) -> None:
        self._settle(block=False)
        time.sleep(seconds)

    def _settle(self, block: bool) -> None:
        left = []
        for sent, future in self.pending:
            if block or future.done():
                sent.origin, sent.delivered = f"pubsub:{self.name}:{future.result(60)}", True
                sent.delivered_at = time.time()
            else:
                left.append((sent, future))
        self.pending = left

    def flush(self) -> None:
        self._settle(block=True)

    def close(self) -> None:
        self.client.stop()


SENDERS: dict[str, type[Sender]] = {
    "kafka": KafkaSender, "nats": NatsSender, "pubsub": PubSubSender,
}  # fmt: skip


class PacedProducer(threading.Thread):
    """Sends a :class:`Workload` to the telemetry topic at its pace, keyed by player; every
    message is logged in :attr:`sent` (with its partition and offset once delivered)."""

    def __init__(self, settings: Settings, workload: Workload) -> None:
        super().__init__(daemon=True)
        self.settings, self.workload = settings, workload
        self.rng = random.Random(workload.seed)
        with (REFERENCE / "players.csv").open() as f:
            rows = [(r["player_id"], r["site_id"]) for r in csv.DictReader(f)]
        with (REFERENCE / "bet_sites.csv").open() as f:
            self.sites = [r["site_id"] for r in csv.DictReader(f)]
        self.players = self.rng.sample(rows, workload.players)
        self.players += [("ghost-1", self.sites[0]), (self.players[0][0], "xx-unlisted")]
        self.sent: list[Sent] = []
        self.started_at = self.finished_at = 0.0
        self.sending = threading.Event()
        self.error: BaseException | None = None
        self.counter = 0

    # what to send, second by second
    def plan(self) -> list[tuple[float, str]]:
        """(seconds after the start, category) of every message, in order."""
        w, rng, plan = self.workload, self.rng, []
        main_end = w.seconds - 30 if w.tail else w.seconds
        step = 1 / w.rate
        at = 0.0
        while at < main_end:
            pick = rng.random()
            category = (
                OUT_OF_ORDER if pick < w.out_of_order
                else LATE if pick < w.out_of_order + w.late
                else IN_ORDER
            )  # fmt: skip
            plan.append((at, category))
            if rng.random() < w.duplicate and at + 15 < main_end:
                plan.append((at + rng.uniform(1, 15), DUPLICATE))
            if rng.random() < w.malformed:
                plan.append((at, MALFORMED))
            at += step
        at = 0.0
        while w.too_late_per_second and at < main_end:
            if any(lo <= at < hi for lo, hi in w.too_late_at):
                plan.append((at, TOO_LATE))
            at += 1 / w.too_late_per_second
        if w.tail:
            at = main_end
            while at < w.seconds - 1:
                plan.append((at, "tail"))
                at += 0.5
            plan += [(w.seconds, f"final:{p}") for p in range(PARTITIONS)]
        return sorted(plan, key=lambda item: item[0])

    def _event(self, behind: float, player: tuple[str, str] | None = None) -> tuple[dict, int]:
        rng = self.rng
        player_id, home = player or rng.choice(self.players)
        site = home if rng.random() < 0.95 else rng.choice(self.sites)
        event_us = int((time.time() - behind) * 1e6)
        pick = rng.random()
        if pick < _TIME_FORMATS[0]:
            moment = datetime.fromtimestamp(event_us / 1e6, UTC).replace(
                microsecond=event_us % 1_000_000
            )
            when: str | int = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        elif pick < _TIME_FORMATS[1]:
            moment = datetime.fromtimestamp(event_us / 1e6, UTC).replace(
                microsecond=event_us % 1_000_000
            )
            when = moment.astimezone(_PLUS_TWO).isoformat()
        else:
            when, event_us = event_us // 1000, event_us // 1000 * 1000
        self.counter += 1
        kind = rng.choices(_KINDS, weights=_WEIGHTS)[0]
        event: dict = {"event_id": f"ev-{self.workload.seed}-{self.counter:07d}",
                       "event_type": kind, "event_time": when, "player_id": player_id,
                       "site_id": site}  # fmt: skip
        if rng.random() < 0.25:
            event["currency"] = rng.choice(["EUR", "GBP", "USD", "SEK"])
        if kind in ("bet_placed", "bet_settled", "deposit", "withdrawal"):
            amount = Decimal(rng.randrange(0 if kind == "bet_settled" else 100, 50_000)) / 100
            event["amount"] = f"{amount:.2f}" if rng.random() < 0.3 else float(amount)
        return event, event_us

    def _behind(self, category: str) -> float:
        """How far behind the wall clock an event of ``category`` is (seconds): a late one is
        behind the watermark (wall clock - bound) by 7 s or more, and its window stays open
        for 10 s or more; a too-late one is in a window that closed (end + allowed
        lateness) 40 s or more before the watermark."""
        rng, s = self.rng, self.settings
        bound, lateness, width = (s.max_out_of_orderness_seconds, s.allowed_lateness_seconds,
                                  s.window_seconds)  # fmt: skip
        if category == TOO_LATE:
            now = time.time()
            latest = (now - bound - TOO_LATE_MARGIN - lateness - width) // width * width
            return now - (latest - width * rng.randrange(2) + rng.uniform(0, width))
        return {IN_ORDER: rng.uniform(0, 0.2), OUT_OF_ORDER: rng.uniform(1, bound - 0.5),
                LATE: rng.uniform(bound + 7, bound + lateness - 10),
                MALFORMED: rng.uniform(0, 1)}[category]  # fmt: skip

    def _message(self, category: str) -> Sent:
        rng = self.rng
        if category == DUPLICATE:
            original = rng.choice([s for s in self.sent[-400:] if s.category in ON_TIME])
            return Sent(DUPLICATE, original.key, original.partition, original.line,
                        original.event_id, original.event_us, event=original.event)  # fmt: skip
        player = None
        if category == "tail":  # players of partitions 0 and 1 only
            player = rng.choice([p for p in self.players if partition_of(p[0]) < 2])
            category = LATE
        elif category.startswith("final:"):
            wanted = int(category.split(":")[1])
            player = rng.choice([p for p in self.players if partition_of(p[0]) == wanted])
            category = IN_ORDER
        behind = self._behind(category)
        event, event_us = self._event(behind, player)
        key = event["player_id"]
        if category == MALFORMED:
            spoil, reason = rng.choice(_MALFORMED)
            event["event_id"] = f"bad-{event['event_id']}"
            return Sent(MALFORMED, key, partition_of(key), spoil(event), reason=reason)
        line = json.dumps(event, separators=(",", ":"))
        return Sent(category, key, partition_of(key), line, event["event_id"], event_us,
                    event=event)  # fmt: skip

    def run(self) -> None:
        try:
            self._send()
        except BaseException as error:  # handed to whoever joins
            self.error = error

    def _send(self) -> None:
        out = SENDERS[self.settings.source](self.settings)
        plan = self.plan()
        self.started_at = began = time.time()
        self.sending.set()
        try:
            for planned, category in plan:
                ahead = began + planned - time.time()
                if ahead > 0:
                    out.wait(ahead)
                sent = self._message(category)
                sent.planned, sent.sent_at = planned, time.time()
                self.sent.append(sent)
                out.send(sent)
            out.flush()
        finally:
            out.close()
        self.finished_at = time.time()

    def wait_until(self, seconds: float) -> float:
        """Sleep until ``seconds`` after the first message was sent; returns the wall clock."""
        if not self.sending.wait(120):
            raise RuntimeError("the producer did not start sending")
        time.sleep(max(0.0, self.started_at + seconds - time.time()))
        return time.time()

    def finish(self, timeout: float) -> list[Sent]:
        """Wait for the last message to be delivered; returns the log."""
        self.join(timeout)
        if self.is_alive():
            raise RuntimeError("the producer did not finish in time")
        if self.error is not None:
            raise self.error
        undelivered = [s for s in self.sent if not s.delivered]
        if undelivered:
            raise RuntimeError(f"{len(undelivered)} messages have no delivery report")
        return self.sent


# ------------------------------------------------------------------------- the truth


def truth_sql(window_seconds: int, on_time_only: bool = True) -> str:
    """site_window_stats as the contract defines it, over bronze (its arrived_late = false rows
    unless ``on_time_only`` is false), as one DuckDB query (after benchmarks/reprocess_day.py)."""
    where = "WHERE NOT r.arrived_late" if on_time_only else ""
    money = {"stake_eur": "bet_placed", "payout_eur": "bet_settled",
             "deposits_eur": "deposit", "withdrawals_eur": "withdrawal"}  # fmt: skip
    sums = ",\n".join(
        f"round_even(coalesce(sum(amount * rate) FILTER (WHERE event_type = '{kind}'), 0), 2)"
        f"::DECIMAL(18, 2) AS {name}"
        for name, kind in money.items()
    )
    return f"""
WITH ev AS (
    SELECT r.site_id, r.player_id, r.event_type, r.amount,
           to_timestamp(epoch_us(r.event_time) // {window_seconds * 1_000_000}
                        * {window_seconds}) AS window_start,
           coalesce(r.currency, s.currency) AS cur, (r.event_time AT TIME ZONE 'UTC')::DATE AS d,
           p.segment = 'vip' AS vip
    FROM telemetry_raw r
    LEFT JOIN bet_sites s USING (site_id)
    LEFT JOIN players p USING (player_id)
    {where}
), priced AS (
    SELECT ev.*, CASE WHEN cur = 'EUR' THEN 1 ELSE f.eur_rate END AS rate
    FROM ev ASOF LEFT JOIN fx_rates f ON ev.cur = f.currency AND ev.d >= f.date
), figures AS (
    SELECT window_start, site_id, count(*) AS events,
           count(DISTINCT player_id) AS active_players,
           count(DISTINCT player_id) FILTER (WHERE vip) AS vip_players,
           count(*) FILTER (WHERE event_type = 'session_start') AS sessions,
           count(*) FILTER (WHERE event_type = 'bet_placed') AS bets,
           {sums},
           count(*) FILTER (WHERE event_type IN ('bet_placed', 'bet_settled', 'deposit',
                            'withdrawal') AND rate IS NULL) AS unpriced_events
    FROM priced GROUP BY ALL
)
SELECT f.window_start, f.window_start + INTERVAL {window_seconds} SECOND AS window_end,
       f.site_id, s.name AS site_name, s.brand, s.country, f.events, f.active_players,
       f.vip_players, f.sessions, f.bets, f.stake_eur, f.payout_eur,
       f.stake_eur - f.payout_eur AS ggr_eur, f.deposits_eur, f.withdrawals_eur,
       f.unpriced_events
FROM figures f LEFT JOIN bet_sites s USING (site_id)
ORDER BY f.window_start, f.site_id
"""


def truth_rows(lake: Lake, window_seconds: int, on_time_only: bool = True) -> dict[tuple, dict]:
    """The true figures per (window_start, site_id)."""
    con = lake.connect()
    con.execute("SET TimeZone = 'UTC'")
    rows = con.sql(truth_sql(window_seconds, on_time_only)).to_arrow_table().to_pylist()
    return {(r["window_start"], r["site_id"]): r for r in rows}


def gold_rows(lake: Lake) -> dict[tuple, dict]:
    return {(r["window_start"], r["site_id"]): r for r in lake.scan(SITE_WINDOW_STATS).to_pylist()}


def figure_differences(
    gold: dict[tuple, dict], truth: dict[tuple, dict], keys: Iterable[tuple]
) -> tuple[list[tuple], dict[tuple, dict[str, tuple]]]:
    """Of the true rows at ``keys``: those gold lacks, and per key gold has, the figures where
    it differs, as (gold, truth)."""
    missing, differ = [], {}
    for key in sorted(keys):
        if key not in gold:
            missing.append(key)
            continue
        columns = {c: (gold[key][c], truth[key][c]) for c in FIGURES
                   if gold[key][c] != truth[key][c]}  # fmt: skip
        if columns:
            differ[key] = columns
    return missing, differ


# ------------------------------------------------------------------------- the accounting


@dataclass
class Accounting:
    """What a run left, checked against the producer's log and the truth: ``problems`` (one
    line each, with examples) and ``figures`` (counts for a report)."""

    problems: list[str] = field(default_factory=list)
    figures: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, examples: list[object], count: int | None = None) -> None:
        count = len(examples) if count is None else count
        self.figures[what] = count
        if count:
            shown = "; ".join(str(e) for e in examples[:4])
            self.problems.append(f"{count} {what}, e.g. {shown}")


def _describe(sent: Sent, kills: list[float]) -> str:
    after = [sent.sent_at - k for k in kills if k <= sent.sent_at]
    since = f", {min(after):.0f}s after a kill" if after else ""
    return (f"{sent.event_id or sent.reason} ({sent.category}, p{sent.partition}@{sent.offset}, "
            f"{(sent.sent_at * 1e6 - sent.event_us) / 1e6 if sent.event_us else 0:.0f}s behind, "
            f"sent at +{sent.planned:.0f}s, delivered {sent.delivered_at - sent.sent_at:.1f}s "
            f"later{since})")  # fmt: skip


def check_read_everything(settings: Settings, sent: list[Sent]) -> list[str]:
    """Kafka: per partition, whether the stream group's committed offset is the partition's
    end; NATS: whether every shard's consumer has acked everything; Pub/Sub: whether a pull
    finds nothing unacked (messages out for redelivery do not show)."""
    if settings.source == "nats":
        from betlake.core.nats import NatsClient

        client = NatsClient(settings)
        try:
            backlog = {s: client.backlog(s) for s in range(settings.source_shards)}
        finally:
            client.close()
        return [f"shard {s}: {n} messages not acked" for s, n in backlog.items() if n != 0]
    if settings.source == "pubsub":
        from betlake.core.pubsub import PubSubReader

        reader = PubSubReader(settings)
        try:
            left = reader.fetch(0, 100, 2)
        finally:
            reader.close()
        return [f"{len(left)} messages still unacked, e.g. {left[0].origin}"] if left else []
    topic = settings.telemetry_topic
    partitions = partitions_of(settings, topic)
    committed = {p: c.offset for p, c in committed_offsets(settings, topic, partitions).items()}
    consumer = stream_consumer(settings)
    try:
        ends = end_offsets(consumer, settings, partitions) or {}
    finally:
        consumer.close()
    short = []
    for p in partitions:
        if committed[p] != ends[p]:
            beyond = [s for s in sent if s.partition == p and s.offset >= committed[p]]
            short.append(f"partition {p}: committed {committed[p]}, end {ends[p]} "
                         f"({len(beyond)} messages past the commit, the first "
                         f"{_describe(beyond[0], []) if beyond else '-'})")  # fmt: skip
    return short


def account(settings: Settings, sent: list[Sent], kills: list[float] = ()) -> Accounting:
    """Check bronze, rejected, the arrived_late flags, gold and the stats topic."""
    lake, result = Lake.of(settings), Accounting()
    kills = list(kills)
    valid = {s.event_id: s for s in sent if s.category not in (MALFORMED, DUPLICATE)}
    bronze = lake.scan(
        TELEMETRY_RAW,
        [
            "event_id",
            "event_time",
            "player_id",
            "site_id",
            "event_type",
            "amount",
            "arrived_late",
            "ingest_time",
        ],
    ).to_pylist()
    stored = Counter(r["event_id"] for r in bronze)
    result.figures["messages sent"] = len(sent)
    result.figures["valid events sent"] = len(valid)
    result.figures["bronze rows"] = len(bronze)
    result.add(
        "valid events lost (not in bronze)",
        [_describe(s, kills) for i, s in valid.items() if i not in stored],
    )
    result.add(
        "events stored more than once in bronze", [f"{i} x{n}" for i, n in stored.items() if n > 1]
    )
    result.add("bronze events the producer never sent", [i for i in stored if i not in valid])
    wrong = []
    for r in bronze:
        s = valid.get(r["event_id"])
        if s is None:
            continue
        expected = (int(s.event_us), s.event["player_id"], s.event["site_id"],
                    s.event["event_type"], _amount(s.event))  # fmt: skip
        got = (epoch_us(r["event_time"]), r["player_id"],
               r["site_id"], r["event_type"], r["amount"])  # fmt: skip
        if expected != got:
            wrong.append(f"{r['event_id']}: stored {got}, sent {expected}")
    result.add("bronze events whose fields differ from what was sent", wrong)

    malformed = {s.origin: s for s in sent if s.category == MALFORMED}
    rejected = lake.scan(TELEMETRY_REJECTED, ["origin", "reason"])
    reasons = {r["origin"]: r["reason"] for r in rejected.to_pylist()}
    result.figures["malformed messages sent"] = len(malformed)
    result.add(
        "malformed messages not in telemetry_rejected",
        [_describe(s, kills) for k, s in malformed.items() if k not in reasons],
    )
    result.add("rejections with the wrong reason or of valid messages",
               [f"{k}: {reason} (expected "
                f"{malformed[k].reason if k in malformed else 'no rejection'})"
                for k, reason in reasons.items()
                if k not in malformed or malformed[k].reason != reason])  # fmt: skip

    late = {r["event_id"]: r["arrived_late"] for r in bronze}
    by_category = Counter(valid[i].category for i, flag in late.items() if flag and i in valid)
    result.figures.update({f"flagged {c}": n for c, n in sorted(by_category.items())})
    result.add("too-late events not flagged arrived_late", [
        _describe(s, kills) for i, s in valid.items() if s.category == TOO_LATE
        and late.get(i) is False])  # fmt: skip
    stored_at = {r["event_id"]: r["ingest_time"].timestamp() for r in bronze}
    waited = [s for i, s in valid.items() if s.category == TOO_LATE and late.get(i) is False
              and stored_at[i] - s.sent_at >= WAITED]  # fmt: skip
    result.figures[f"of those, stored {WAITED}s or more after being sent"] = len(waited)
    result.add(
        "on-time events (in order, out of order, or late within the allowed lateness) "
        "flagged arrived_late",
        [_describe(s, kills) for i, s in valid.items() if s.category in ON_TIME and late.get(i)],
    )

    truth = truth_rows(lake, settings.window_seconds)
    everything = truth_rows(lake, settings.window_seconds, on_time_only=False)
    gold = gold_rows(lake)
    result.figures["gold rows"], result.figures["true rows"] = len(gold), len(truth)
    result.add("windows of the truth missing from gold",
               [f"{k[0]:%H:%M} {k[1]} ({truth[k]['events']} events)" for k in truth
                if k not in gold])  # fmt: skip
    result.add("gold rows for windows the truth lacks",
               [f"{k[0]:%H:%M} {k[1]} ({gold[k]['events']} events; bronze has "
                f"{everything.get(k, {}).get('events', 0)}, all flagged arrived_late)"
                for k in gold if k not in truth])  # fmt: skip
    differ, counted_late, over, under = [], 0, 0, 0
    for key in sorted(set(gold) & set(truth)):
        g, t = gold[key], truth[key]
        columns = [c for c in FIGURES if g[c] != t[c]]
        if not columns:
            continue
        all_events = everything[key]["events"]
        counted_late += g["events"] > t["events"] and g["events"] <= all_events
        over += max(0, g["events"] - t["events"])
        under += max(0, t["events"] - g["events"])
        differ.append(f"{key[0]:%H:%M} {key[1]} {g['pane']}: " + ", ".join(
            f"{c} gold {g[c]} truth {t[c]}" for c in columns[:3]
        ) + f" (bronze incl. late: {all_events} events)")  # fmt: skip
    result.add("gold rows differing from the truth over bronze's on-time events", differ)
    result.figures["gold rows counting more events than the truth, as many as bronze incl. "
                   "late events allows"] = counted_late  # fmt: skip
    result.figures["events counted beyond the truth"] = over
    result.figures["on-time events missing from gold"] = under

    latest = read_latest(settings, settings.stats_topic)
    expected_topic = dict(stats_message(row) for row in gold.values())
    result.add(
        "stats topic keys whose latest value is not gold's",
        [key for key, value in expected_topic.items() if latest.get(key) != json.loads(value)],
    )
    result.add("stats topic keys gold lacks", [k for k in latest if k not in expected_topic])
    return result


def _amount(event: dict) -> Decimal | None:
    if event["event_type"] not in ("bet_placed", "bet_settled", "deposit", "withdrawal"):
        return None
    return Decimal(str(event["amount"])).quantize(Decimal("0.01"))
