"""The data contract in code: event rules and reason codes, window alignment, lake table schemas.

Validation works a batch of raw messages at a time and returns Arrow tables ready for the lake:
the stream and the file ingest call the same :func:`validate`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from betlake.windowing import US, Windowing, epoch_us

EVENT_TYPES = (
    "session_start",
    "session_end",
    "bet_placed",
    "bet_settled",
    "deposit",
    "withdrawal",
    "page_view",
    "heartbeat",
)
MONEY_EVENT_TYPES = frozenset({"bet_placed", "bet_settled", "deposit", "withdrawal"})
SEGMENTS = ("vip", "regular", "new")
PARTITION_FORMAT = "%Y-%m-%d-%H:%M"  # Dagster partition key of the window starting then

TIMESTAMP = pa.timestamp("us", tz="UTC")
MONEY = pa.decimal128(18, 2)
RATE = pa.decimal128(18, 10)
_MAX_AMOUNT = Decimal("9999999999999999.99")
_MAX_EPOCH_MS = 253_402_300_800_000  # 10000-01-01
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)\Z")


# ---------------------------------------------------------------- lake tables


@dataclass(frozen=True)
class TableSpec:
    """A lake table: its Arrow schema, partition columns and identity key."""

    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...] = ()
    key: tuple[str, ...] = ()


TELEMETRY_RAW = TableSpec(
    "telemetry_raw",
    pa.schema(
        [
            ("event_id", pa.string(), False),
            ("event_type", pa.string(), False),
            ("event_time", TIMESTAMP, False),
            ("player_id", pa.string(), False),
            ("site_id", pa.string(), False),
            ("amount", MONEY),
            ("currency", pa.string()),
            ("bet_id", pa.string()),
            ("window_start", TIMESTAMP, False),
            ("event_date", pa.date32(), False),
            ("ingest_time", TIMESTAMP, False),
            ("source", pa.string(), False),
            ("kafka_partition", pa.int32()),
            ("kafka_offset", pa.int64()),
            ("arrived_late", pa.bool_(), False),
            ("payload", pa.string(), False),
        ]
    ),
    partition_by=("event_date",),
    key=("event_id",),
)

TELEMETRY_DISCARDED = TableSpec(
    "telemetry_discarded",
    pa.schema(
        [
            *TELEMETRY_RAW.schema,
            ("discard_id", pa.string(), False),
            ("discarded_at", TIMESTAMP, False),
            ("discarded_by", pa.string(), False),
            ("discard_reason", pa.string(), False),
            ("restored_at", TIMESTAMP),  # set when `betlake restore` put the event back
        ]
    ),
    partition_by=("event_date",),
    key=("discard_id", "event_id"),
)

TELEMETRY_REJECTED = TableSpec(
    "telemetry_rejected",
    pa.schema(
        [
            ("ingest_time", TIMESTAMP, False),
            ("source", pa.string(), False),
            ("kafka_partition", pa.int32()),
            ("kafka_offset", pa.int64()),
            ("reason", pa.string(), False),
            ("payload", pa.string(), False),
            # Where the message came from (file:line or topic/partition/offset): its identity,
            # so re-reading the same input never records a rejection twice.
            ("origin", pa.string(), False),
        ]
    ),
    key=("origin",),
)

BET_SITES = TableSpec(
    "bet_sites",
    pa.schema(
        [
            ("site_id", pa.string(), False),
            ("name", pa.string()),
            ("brand", pa.string()),
            ("country", pa.string()),
            ("currency", pa.string(), False),
            ("timezone", pa.string()),
            ("loaded_at", TIMESTAMP, False),
        ]
    ),
    key=("site_id",),
)

PLAYERS = TableSpec(
    "players",
    pa.schema(
        [
            ("player_id", pa.string(), False),
            ("site_id", pa.string()),
            ("country", pa.string()),
            ("segment", pa.string(), False),
            ("registered_at", TIMESTAMP),
            ("loaded_at", TIMESTAMP, False),
        ]
    ),
    key=("player_id",),
)

FX_RATES = TableSpec(
    "fx_rates",
    pa.schema(
        [
            ("date", pa.date32(), False),
            ("currency", pa.string(), False),
            ("eur_rate", RATE, False),
            ("loaded_at", TIMESTAMP, False),
        ]
    ),
    key=("date", "currency"),
)

SITE_WINDOW_STATS = TableSpec(
    "site_window_stats",
    pa.schema(
        [
            ("window_start", TIMESTAMP, False),
            ("window_end", TIMESTAMP, False),
            ("site_id", pa.string(), False),
            ("site_name", pa.string()),
            ("brand", pa.string()),
            ("country", pa.string()),
            ("events", pa.int64(), False),
            ("active_players", pa.int64(), False),
            ("vip_players", pa.int64(), False),
            ("sessions", pa.int64(), False),
            ("bets", pa.int64(), False),
            ("stake_eur", MONEY, False),
            ("payout_eur", MONEY, False),
            ("ggr_eur", MONEY, False),
            ("deposits_eur", MONEY, False),
            ("withdrawals_eur", MONEY, False),
            ("unpriced_events", pa.int64(), False),
            ("pane", pa.string(), False),
            ("computed_at", TIMESTAMP, False),
            # Partition column (the UTC date of window_start): writers to different days
            # never conflict, and every predicate names it.
            ("window_date", pa.date32(), False),
        ]
    ),
    partition_by=("window_date",),
    key=("window_start", "site_id"),
)

# A result may only move toward the truth (CONTRACT.md, site_window_stats): a streaming pane
# (s) replaces a gold row (t) only if it counts more events, or as many as a row an earlier
# pane, not a reprocessing, wrote. SQL over the merge's aliases; the stream's publishing
# evaluates the same text (Lake.rows_to_upsert).
NEWER_PANE = "s.events > t.events OR (s.events = t.events AND t.pane <> 'BATCH')"

TABLES = {
    spec.name: spec
    for spec in (
        TELEMETRY_RAW,
        TELEMETRY_REJECTED,
        TELEMETRY_DISCARDED,
        BET_SITES,
        PLAYERS,
        FX_RATES,
        SITE_WINDOW_STATS,
    )
}

# The columns of telemetry_raw the window transform needs (no payload: it is the bulk of a row).
EVENT_COLUMNS = ("event_type", "event_time", "player_id", "site_id", "amount", "currency")


# ---------------------------------------------------------------- validation


@dataclass(frozen=True)
class RawBatch:
    """Raw messages as they arrived, with where each came from."""

    payloads: Sequence[str | bytes]
    source: str  # "kafka" or "file"
    arrived_at: datetime
    origins: Sequence[str]
    kafka_partitions: Sequence[int | None] | None = None
    kafka_offsets: Sequence[int | None] | None = None


@dataclass(frozen=True)
class Validated:
    """The outcome of validating a batch: bronze rows and rejected rows, both lake-ready."""

    events: pa.Table  # telemetry_raw schema
    rejected: pa.Table  # telemetry_rejected schema


class _Rejected(Exception):
    """Internal: an event broke a contract rule; the message is the reason code."""


_EVENT_TYPE_SET = frozenset(EVENT_TYPES)


def _required_string(obj: dict, name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise _Rejected(f"missing_field:{name}")
    return value


def _event_time_us(value: object) -> int:
    if isinstance(value, bool):
        raise _Rejected("bad_event_time")
    if isinstance(value, int):
        if not 0 <= value < _MAX_EPOCH_MS:
            raise _Rejected("bad_event_time")
        return value * 1000
    if not isinstance(value, str):
        raise _Rejected("bad_event_time")
    if not _RFC3339.match(value):
        raise _Rejected("bad_event_time")
    try:
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:  # e.g. month 13
        raise _Rejected("bad_event_time") from None
    return epoch_us(parsed)


def _amount(value: object) -> Decimal:
    """A money amount: a JSON number (kept as its text) or a decimal string, >= 0, cents."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _Rejected("bad_amount")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise _Rejected("bad_amount") from None
    if not amount.is_finite() or amount < 0 or amount > _MAX_AMOUNT:
        raise _Rejected("bad_amount")
    if amount.as_tuple().exponent < -2 and amount != amount.quantize(Decimal("0.01")):
        raise _Rejected("bad_amount")  # fractions of a cent would be silently rounded
    return amount


def _optional_string(value: object) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value)


def validate(batch: RawBatch, *, window_seconds: int, max_clock_skew_seconds: int) -> Validated:
    """Check every message of a batch against the contract.

    Valid events come back as ``telemetry_raw`` rows (``arrived_late`` false), the others as
    ``telemetry_rejected`` rows with one reason code each. Nothing is dropped.
    """
    arrived_us = epoch_us(batch.arrived_at)
    latest_us = arrived_us + max_clock_skew_seconds * US
    cols: dict[str, list] = {
        name: []
        for name in (
            "event_id",
            "event_type",
            "event_time",
            "player_id",
            "site_id",
            "amount",
            "currency",
            "bet_id",
            "payload",
            "index",
        )
    }
    bad_index: list[int] = []
    bad_reason: list[str] = []
    bad_payload: list[str] = []
    for index, raw in enumerate(batch.payloads):
        try:
            try:
                text = raw if isinstance(raw, str) else raw.decode("utf-8")
                obj = json.loads(text, parse_float=str)
            except UnicodeDecodeError:
                text = raw.decode("utf-8", errors="backslashreplace")  # kept, readable
                raise _Rejected("malformed_json") from None
            except ValueError:
                raise _Rejected("malformed_json") from None
            if not isinstance(obj, dict):
                raise _Rejected("malformed_json")
            event_id = _required_string(obj, "event_id")
            event_type = _required_string(obj, "event_type")
            if "event_time" not in obj or obj["event_time"] in (None, ""):
                raise _Rejected("missing_field:event_time")
            player_id = _required_string(obj, "player_id")
            site_id = _required_string(obj, "site_id")
            if event_type not in _EVENT_TYPE_SET:
                raise _Rejected("bad_event_type")
            event_time = _event_time_us(obj["event_time"])
            amount = _amount(obj.get("amount")) if event_type in MONEY_EVENT_TYPES else None
            if event_time > latest_us:
                raise _Rejected("future_event")
        except _Rejected as rejected:
            bad_index.append(index)
            bad_reason.append(str(rejected))
            bad_payload.append(text)
            continue
        currency = obj.get("currency")
        cols["event_id"].append(event_id)
        cols["event_type"].append(event_type)
        cols["event_time"].append(event_time)
        cols["player_id"].append(player_id)
        cols["site_id"].append(site_id)
        cols["amount"].append(amount)
        cols["currency"].append(
            currency.strip().upper() or None if isinstance(currency, str) else None
        )
        cols["bet_id"].append(_optional_string(obj.get("bet_id")))
        cols["payload"].append(text)
        cols["index"].append(index)
    return Validated(
        events=_bronze_rows(batch, cols, arrived_us, window_seconds),
        rejected=_rejected_rows(batch, bad_index, bad_reason, bad_payload, arrived_us),
    )


def _origin_columns(batch: RawBatch, index: Sequence[int]) -> dict[str, pa.Array]:
    def pick(values: Sequence | None, dtype: pa.DataType) -> pa.Array:
        if values is None:
            return pa.nulls(len(index), dtype)
        return pa.array([values[i] for i in index], dtype)

    return {
        "source": pa.array([batch.source] * len(index), pa.string()),
        "kafka_partition": pick(batch.kafka_partitions, pa.int32()),
        "kafka_offset": pick(batch.kafka_offsets, pa.int64()),
    }


def _bronze_rows(
    batch: RawBatch, cols: dict[str, list], arrived_us: int, window_seconds: int
) -> pa.Table:
    n = len(cols["index"])
    event_time = np.asarray(cols["event_time"], dtype=np.int64)
    event_ts = pa.array(event_time, pa.int64()).cast(TIMESTAMP)
    columns = {
        "event_id": pa.array(cols["event_id"], pa.string()),
        "event_type": pa.array(cols["event_type"], pa.string()),
        "event_time": event_ts,
        "player_id": pa.array(cols["player_id"], pa.string()),
        "site_id": pa.array(cols["site_id"], pa.string()),
        "amount": pa.array(cols["amount"], MONEY),
        "currency": pa.array(cols["currency"], pa.string()),
        "bet_id": pa.array(cols["bet_id"], pa.string()),
        "window_start": pa.array(Windowing(window_seconds).start_us(event_time), pa.int64()).cast(
            TIMESTAMP
        ),
        "event_date": pc.cast(event_ts, pa.date32()),
        "ingest_time": pa.array(np.full(n, arrived_us, dtype=np.int64), pa.int64()).cast(TIMESTAMP),
        **_origin_columns(batch, cols["index"]),
        "arrived_late": pa.array(np.zeros(n, dtype=bool), pa.bool_()),
        "payload": pa.array(cols["payload"], pa.string()),
    }
    return pa.table(columns, schema=TELEMETRY_RAW.schema)


def _rejected_rows(
    batch: RawBatch,
    index: list[int],
    reason: list[str],
    payload: list[str],
    arrived_us: int,
) -> pa.Table:
    n = len(index)
    columns = {
        "ingest_time": pa.array(np.full(n, arrived_us, dtype=np.int64), pa.int64()).cast(TIMESTAMP),
        **_origin_columns(batch, index),
        "reason": pa.array(reason, pa.string()),
        "payload": pa.array(payload, pa.string()),
        "origin": pa.array([batch.origins[i] for i in index], pa.string()),
    }
    return pa.table(columns, schema=TELEMETRY_REJECTED.schema)
