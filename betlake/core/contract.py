"""The data contract in code: event rules and reason codes, window alignment, lake table schemas.

Validation works a batch of raw messages at a time and returns Arrow tables ready for the lake:
the stream and the file ingest call the same :func:`validate`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from betlake_native import PlainDecoder

from betlake.core.windowing import US, Windowing, epoch_us

log = logging.getLogger(__name__)

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
_MIN_TIME_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z, the first a datetime can hold
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)\Z")


# ---------------------------------------------------------------- lake tables


@dataclass(frozen=True)
class TableSpec:
    """A lake table: its Arrow schema, partition columns and identity key; ``key_within``:
    columns whose range in a batch bounds where rows with the batch's keys can be (a key
    lookup reads only the files whose statistics overlap it); ``history``: how long its log
    keeps old versions (a Delta interval; None: Delta's 30 days)."""

    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...] = ()
    key: tuple[str, ...] = ()
    key_within: tuple[str, ...] = ()
    history: str | None = None


# The tables the stream commits to several times a second keep a minute of history (the
# stream's compactor deletes older log entries that a checkpoint covers): every commit lists
# the whole log folder, so at Delta's 30 days a commit cost more with each one made (in the
# 30-minute soak, 0.4 -> 0.6 cores of delta-rs and rising, and the publish delay with it).
# Nothing reads their old versions: a recomputation reads the latest.
STREAMED_HISTORY = "interval 1 minute"


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
    history=STREAMED_HISTORY,
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
    key_within=("kafka_partition", "kafka_offset"),  # a transport position is in its origin
    history=STREAMED_HISTORY,
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
    history=STREAMED_HISTORY,
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
class Origins(Sequence[str]):
    """Origins ``prefix + number`` (a Kafka offset, a line number), each made only when asked
    for (only rejected messages store theirs)."""

    prefix: str
    numbers: Sequence[int]

    def __len__(self) -> int:
        return len(self.numbers)

    def __getitem__(self, index):  # an int gives an origin, a slice a list of them
        if isinstance(index, slice):
            return [f"{self.prefix}{number}" for number in self.numbers[index]]
        return f"{self.prefix}{self.numbers[index]}"


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
MAX_MESSAGE_BYTES = 64 * 1024  # a bigger message is `oversized`, whatever it holds
MAX_ID_CHARS = 128  # a longer event_id, player_id, site_id or bet_id is `bad_id`
MAX_DEPTH = 128  # JSON nested deeper (arrays and objects) is `malformed_json`
_CENT = Decimal("0.01")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc: C0, DEL and C1
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_OPENING = np.frombuffer(b"[{", np.uint8)


def _too_deep(text: str) -> bool:
    """Whether JSON text nests arrays and objects deeper than :data:`MAX_DEPTH` (brackets in
    strings do not count); only asked of a text with more opening brackets than that."""
    brackets = np.frombuffer(_NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).encode(), np.uint8)
    return bool(np.cumsum(np.where(np.isin(brackets, _OPENING), 1, -1)).max() > MAX_DEPTH)


class _Number(str):
    """A JSON number kept as its text: a fraction (money is read as the decimal it spells), or
    an integer past Python's int-digits limit. Not a string: an id so written is missing."""


def _json_int(text: str) -> int | _Number:
    try:
        return int(text)
    except ValueError:  # over the int-digits limit
        return _Number(text)


# One decoder for every message: a fraction stays its text, so are integers past the limit.
_DECODER = json.JSONDecoder(parse_float=_Number, parse_int=_json_int)


def _valid_unicode(obj: dict) -> bool:
    """Whether every string of a parsed object, keys included, can be stored (no lone
    surrogate, which only a ``\\uD800``-style escape can produce, so only asked of a text
    with a ``\\u`` escape)."""
    try:
        json.dumps(obj, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def _required_string(obj: dict, name: str) -> str:
    value = obj.get(name)
    if type(value) is not str or not value:
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
    event_time = epoch_us(parsed)
    if not _MIN_TIME_US <= event_time < _MAX_EPOCH_MS * 1000:  # e.g. year 1 at +01:00
        raise _Rejected("bad_event_time")
    return event_time


def _amount(value: object) -> Decimal:
    """A money amount: a JSON number (kept as its text) or a decimal string, >= 0, in cents."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _Rejected("bad_amount")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise _Rejected("bad_amount") from None
    if not amount.is_finite() or amount < 0 or amount > _MAX_AMOUNT:
        raise _Rejected("bad_amount")
    cents = amount.quantize(_CENT)  # also what decimal(18, 2) can hold: 1.000...0 is 1.00
    if cents != amount:
        raise _Rejected("bad_amount")  # fractions of a cent would be silently rounded
    return cents


def _optional_string(value: object) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _event(data: bytes, latest_us: int) -> tuple:
    """The bronze values of one message (see :func:`validate`), or :class:`_Rejected`."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise _Rejected("oversized")
    try:
        text = data.decode()
        if text.count("[") + text.count("{") > MAX_DEPTH and _too_deep(text):
            raise _Rejected("malformed_json")
        obj = _DECODER.decode(text)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _Rejected("malformed_json") from None
    if not isinstance(obj, dict) or ("\\u" in text and not _valid_unicode(obj)):
        raise _Rejected("malformed_json")
    event_id = _required_string(obj, "event_id")
    event_type = _required_string(obj, "event_type")
    if "event_time" not in obj or obj["event_time"] in (None, ""):
        raise _Rejected("missing_field:event_time")
    player_id = _required_string(obj, "player_id")
    site_id = _required_string(obj, "site_id")
    bet_id = _optional_string(obj.get("bet_id"))
    for value in (event_id, player_id, site_id, bet_id):
        if value is not None and (
            len(value) > MAX_ID_CHARS or (not value.isprintable() and _CONTROL.search(value))
        ):
            raise _Rejected("bad_id")
    if event_type not in _EVENT_TYPE_SET:
        raise _Rejected("bad_event_type")
    event_time = _event_time_us(obj["event_time"])
    amount = _amount(obj.get("amount")) if event_type in MONEY_EVENT_TYPES else None
    if event_time > latest_us:
        raise _Rejected("future_event")
    currency = obj.get("currency")
    currency = currency.strip().upper() or None if type(currency) is str else None
    return event_id, event_type, event_time, player_id, site_id, amount, currency, bet_id, text


def validate(batch: RawBatch, *, window_seconds: int, max_clock_skew_seconds: int) -> Validated:
    """Check every message of a batch against the contract; this never raises.

    Valid events come back as ``telemetry_raw`` rows (``arrived_late`` false), in message
    order, the others as ``telemetry_rejected`` rows with one reason code each. Nothing is
    dropped. The checks run in this order, the first that fails giving the reason:

    1. ``oversized``: over :data:`MAX_MESSAGE_BYTES` of UTF-8, measured before anything is
       decoded or parsed;
    2. ``malformed_json``: not UTF-8, nested deeper than :data:`MAX_DEPTH`, not JSON, not an
       object, or a string in it (a key too) that is not valid Unicode (a lone surrogate);
    3. ``missing_field:<name>``: event_id, event_type, event_time, player_id, site_id;
    4. ``bad_id``: event_id, player_id, site_id or bet_id over :data:`MAX_ID_CHARS` characters
       or holding a control character (Unicode category Cc);
    5. ``bad_event_type``, ``bad_event_time``, ``bad_amount`` (money types only), then
       ``future_event``.

    Plain messages (the bulk) are decided a batch at a time (:func:`_plain_events`); every
    other one, message by message (:func:`_event`), which alone gives reasons. A rejected row's
    payload is the message decoded as UTF-8 with any invalid byte written as ``\\xNN``, whole
    (an oversized one too). Should a message raise anything unforeseen, it is logged and
    rejected as ``malformed_json``, so the messages around it are unaffected.
    """
    arrived_us = epoch_us(batch.arrived_at)
    latest_us = arrived_us + max_clock_skew_seconds * US
    # A str (from Python callers) is judged as the bytes it stands for; a lone surrogate in it
    # makes them invalid UTF-8.
    payloads = [
        raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
        for raw in batch.payloads
    ]
    plain_index, plain = _plain_events(payloads, latest_us)
    decided = np.zeros(len(payloads), dtype=bool)
    decided[plain_index] = True
    good: list[tuple] = []
    good_index: list[int] = []
    bad_index: list[int] = []
    bad_reason: list[str] = []
    bad_payload: list[str] = []
    for index in np.flatnonzero(~decided).tolist():
        data = payloads[index]
        try:
            good.append(_event(data, latest_us))
            good_index.append(index)
            continue
        except _Rejected as rejected:
            bad_reason.append(str(rejected))
        except Exception:
            log.exception("unforeseen error validating %s: rejected", batch.origins[index])
            bad_reason.append("malformed_json")
        bad_index.append(index)
        bad_payload.append(data.decode("utf-8", "backslashreplace"))
    values = {
        name: pa.concat_arrays([plain[name], column])
        for name, column in _event_columns(good).items()
    }
    index = np.concatenate([plain_index, np.asarray(good_index, dtype=np.int64)])
    return Validated(
        events=_bronze_rows(batch, values, index, arrived_us, window_seconds),
        rejected=_rejected_rows(batch, bad_index, bad_reason, bad_payload, arrived_us),
    )


# The rules of _event that the native batch path holds a plain message to.
_PLAIN = PlainDecoder(
    event_types=list(EVENT_TYPES),
    money_types=sorted(MONEY_EVENT_TYPES),
    max_id_chars=MAX_ID_CHARS,
    max_message_bytes=MAX_MESSAGE_BYTES,
    min_time_us=_MIN_TIME_US,
    max_time_us=_MAX_EPOCH_MS * 1000,
)
_VALUE_TYPES = {
    "event_id": pa.string(),
    "event_type": pa.string(),
    "event_time": pa.int64(),
    "player_id": pa.string(),
    "site_id": pa.string(),
    "amount": MONEY,
    "currency": pa.string(),
    "bet_id": pa.string(),
    "payload": pa.string(),
}


def _plain_events(payloads: list[bytes], latest_us: int) -> tuple[np.ndarray, dict[str, pa.Array]]:
    """The plain messages of a batch, decided together: their indexes and bronze values.

    Plain: a flat JSON object in UTF-8 with no escape and no control character, every field
    of the JSON type the contract wants, and every rule of :func:`_event` passed. The native
    decoder (``native/src/lib.rs``, without the GIL) gives the values :func:`_event` would
    give; whatever is not plain, valid or not, it leaves to :func:`_event`.
    """
    index, buffers = _PLAIN.decode(payloads, latest_us)
    plain = np.frombuffer(index, np.int64)
    values = {
        name: pa.Array.from_buffers(dtype, len(plain), [
            None if buffer is None else pa.py_buffer(buffer) for buffer in buffers[name]
        ])
        for name, dtype in _VALUE_TYPES.items()
    }  # fmt: skip
    return plain, values


def _origin_columns(batch: RawBatch, index: Sequence[int]) -> dict[str, pa.Array]:
    def pick(values: Sequence | None, dtype: pa.DataType) -> pa.Array:
        if values is None:
            return pa.nulls(len(index), dtype)
        return pa.array(np.asarray(values)[index], dtype)

    return {
        "source": pa.repeat(pa.scalar(batch.source, pa.string()), len(index)),
        "kafka_partition": pick(batch.kafka_partitions, pa.int32()),
        "kafka_offset": pick(batch.kafka_offsets, pa.int64()),
    }


def _event_columns(rows: list[tuple]) -> dict[str, pa.Array]:
    """The values :func:`_event` gave, as columns."""
    columns = list(zip(*rows, strict=True)) or [()] * len(_VALUE_TYPES)
    return {
        name: pa.array(column, dtype)
        for (name, dtype), column in zip(_VALUE_TYPES.items(), columns, strict=True)
    }


def _bronze_rows(
    batch: RawBatch,
    values: dict[str, pa.Array],
    index: np.ndarray,
    arrived_us: int,
    window_seconds: int,
) -> pa.Table:
    """``telemetry_raw`` rows of event ``values``, message ``index`` each, in message order."""
    if np.any(index[1:] < index[:-1]):  # events the per-message path took come after
        order = np.argsort(index, kind="stable")
        index = index[order]
        values = {name: column.take(order) for name, column in values.items()}
    n = len(index)
    event_time = values["event_time"].to_numpy(zero_copy_only=False)
    event_ts = values["event_time"].cast(TIMESTAMP)
    columns = {
        **{name: values[name] for name in ("event_id", "event_type")},
        "event_time": event_ts,
        **{name: values[name] for name in ("player_id", "site_id", "amount", "currency", "bet_id")},
        "window_start": pa.array(Windowing(window_seconds).start_us(event_time), pa.int64()).cast(
            TIMESTAMP
        ),
        "event_date": pc.cast(event_ts, pa.date32()),
        "ingest_time": pa.array(np.full(n, arrived_us, dtype=np.int64), pa.int64()).cast(TIMESTAMP),
        **_origin_columns(batch, index),
        "arrived_late": pa.array(np.zeros(n, dtype=bool), pa.bool_()),
        "payload": values["payload"],
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
