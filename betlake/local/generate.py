"""Synthetic data: realistic, imperfect player telemetry.

Telemetry comes out in *arrival* order: sessions of bets, settlements, deposits and page views
in several currencies, players mostly on their home site, with a chosen out-of-order spread and
fractions of late, duplicated and malformed messages. The same seed gives the same lines.
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from pyarrow import csv

from betlake.core.contract import BET_SITES, PLAYERS
from betlake.core.windowing import epoch_us, to_utc

_PLUS_TWO = timezone(timedelta(hours=2))


@dataclass(frozen=True)
class TelemetrySpec:
    """What to generate. Fractions are of the valid events."""

    count: int = 100_000
    start: datetime = datetime(2026, 11, 24, tzinfo=UTC)
    span: timedelta = timedelta(days=1)
    seed: int = 1
    disorder_seconds: float = 20.0  # arrival delay spread: events arrive out of order by this
    late_fraction: float = 0.002  # share of events delayed by 20 to 40 minutes
    duplicate_fraction: float = 0.01  # share of events delivered twice
    malformed_fraction: float = 0.002  # share of extra messages that break a contract rule
    unknown_fraction: float = 0.002  # share of events for a site or player not in the reference


def _players(reference: Path) -> tuple[list[tuple[str, str]], dict[str, str]]:
    players = csv.read_csv(reference / f"{PLAYERS.name}.csv").select(["player_id", "site_id"])
    sites = csv.read_csv(reference / f"{BET_SITES.name}.csv").select(["site_id", "currency"])
    pairs = list(zip(*(players.column(c).to_pylist() for c in players.column_names), strict=True))
    return pairs, dict(zip(*(sites.column(c).to_pylist() for c in sites.column_names), strict=True))


def _format_time(us: int, rng: random.Random) -> str | int:
    """Event time as producers send it: RFC 3339 in UTC or with an offset, or epoch ms."""
    pick = rng.random()
    moment = datetime.fromtimestamp(us / 1e6, UTC).replace(microsecond=us % 1_000_000)
    if pick < 0.6:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if pick < 0.8:
        return moment.astimezone(_PLUS_TWO).isoformat()
    return us // 1000


def _money(rng: random.Random, low: float, high: float) -> float | str:
    value = round(rng.uniform(low, high), 2)
    return f"{value:.2f}" if rng.random() < 0.3 else value


_MALFORMATIONS = (
    lambda e: json.dumps(e)[:-7],  # truncated: malformed_json
    lambda e: json.dumps({k: v for k, v in e.items() if k != "player_id"}),  # missing_field
    lambda e: json.dumps({**e, "site_id": ""}),  # empty id counts as missing
    lambda e: json.dumps({**e, "event_type": "jackpot"}),  # bad_event_type
    lambda e: json.dumps({**e, "event_time": "yesterday"}),  # bad_event_time
    lambda e: json.dumps({**e, "event_type": "deposit", "amount": -25}),  # bad_amount
    lambda e: json.dumps({**e, "event_time": "2099-01-01T00:00:00Z"}),  # future_event
)


def generate_telemetry(spec: TelemetrySpec, reference: Path) -> Iterator[tuple[str, str]]:
    """(player_id, JSON line) of telemetry in arrival order (bounded memory, whatever the count).

    The player is the Kafka message key; a malformed line keeps the key of the event it spoils.
    """
    rng = random.Random(spec.seed)
    players, site_currency = _players(reference)
    sites = list(site_currency)
    start_us, span_us = epoch_us(to_utc(spec.start)), int(spec.span.total_seconds() * 1e6)
    end_us, session_us, sessions = start_us + span_us, float(start_us), 0
    pending: list[tuple[int, int, str, str]] = []  # (arrival_us, seq, key, line)
    seq = made = 0

    def push(event: dict, event_us: int) -> None:
        nonlocal seq
        delay = rng.uniform(0, spec.disorder_seconds) * 1e6
        if rng.random() < spec.late_fraction:
            delay += rng.uniform(1200, 2400) * 1e6
        line = json.dumps(event, separators=(",", ":"))
        for _ in range(2 if rng.random() < spec.duplicate_fraction else 1):
            seq += 1
            heapq.heappush(pending, (int(event_us + delay), seq, event["player_id"], line))
            delay += rng.uniform(0, 60) * 1e6
        if rng.random() < spec.malformed_fraction:
            seq += 1
            bad = rng.choice(_MALFORMATIONS)({**event, "event_id": f"{event['event_id']}-bad"})
            heapq.heappush(pending, (int(event_us + delay), seq, event["player_id"], bad))

    while made < spec.count:
        player, home = rng.choice(players)
        site = home if rng.random() < 0.95 else rng.choice(sites)
        if rng.random() < spec.unknown_fraction:
            player, site = rng.choice(
                [(f"ghost-{rng.randrange(10**6)}", site), (player, "xx-unlisted")]
            )
        currency = site_currency.get(site, "EUR")
        at = int(session_us)
        kinds = ["session_start"]
        while len(kinds) < 23 and made + len(kinds) < spec.count:
            kinds.append(rng.choices(
                ["bet_placed", "page_view", "heartbeat", "deposit", "withdrawal"],
                weights=[45, 30, 15, 7, 3])[0])  # fmt: skip
            if rng.random() < 0.1:
                break
        kinds.append("session_end")
        for kind in kinds:
            if made >= spec.count:
                break
            at = min(at + int(rng.expovariate(1 / 20) * 1e6), start_us + span_us - 1)
            made += 1
            event: dict = {
                "event_id": f"ev-{spec.seed}-{made:09d}",
                "event_type": kind,
                "event_time": _format_time(at, rng),
                "player_id": player,
                "site_id": site,
            }
            if rng.random() < 0.25:
                event["currency"] = rng.choice([currency, "EUR"])
            if kind in ("bet_placed", "deposit", "withdrawal"):
                event["amount"] = _money(rng, 1, 200 if kind == "bet_placed" else 500)
            if kind == "bet_placed":
                event["bet_id"] = f"b-{event['event_id']}"
            push(event, at)
            if kind == "bet_placed" and made < spec.count:
                made += 1
                settle_us = min(at + int(rng.uniform(5, 240) * 1e6), start_us + span_us - 1)
                won = rng.random() < 0.45
                push(
                    {
                        "event_id": f"ev-{spec.seed}-{made:09d}",
                        "event_type": "bet_settled",
                        "event_time": _format_time(settle_us, rng),
                        "player_id": player,
                        "site_id": site,
                        "amount": _money(rng, 1, 400) if won else 0,
                        "bet_id": event["bet_id"],
                        **({"currency": event["currency"]} if "currency" in event else {}),
                    },
                    settle_us,
                )
        while pending and pending[0][0] < session_us:
            yield heapq.heappop(pending)[2:]
        sessions += 1  # spread the sessions still to come evenly over the span still left
        sessions_left = (spec.count - made) / (made / sessions)
        session_us += (end_us - session_us) / max(1.0, sessions_left)
    while pending:
        yield heapq.heappop(pending)[2:]
