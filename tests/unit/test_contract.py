"""Unit tests of :func:`betlake.core.contract.validate` against the data contract (CONTRACT.md)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from betlake.core.contract import (
    EVENT_TYPES,
    MONEY_EVENT_TYPES,
    TELEMETRY_RAW,
    TELEMETRY_REJECTED,
    Origins,
    RawBatch,
    Validated,
    validate,
)
from tests.hostile import hostile_lines, readable

ARRIVED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
RAW = "__RAW_NUMBER__"  # a placeholder replaced by the literal JSON text of a number
MONEY_TYPES = sorted(MONEY_EVENT_TYPES)
OTHER_TYPES = sorted(set(EVENT_TYPES) - MONEY_EVENT_TYPES)


def event(**fields: object) -> dict:
    """A valid bet_placed event, with fields overridden (a value of ... removes the field)."""
    base: dict = {
        "event_id": "e-1",
        "event_type": "bet_placed",
        "event_time": "2026-11-24T10:00:00Z",
        "player_id": "p-1",
        "site_id": "s-1",
        "amount": "12.50",
        "currency": "EUR",
        "bet_id": "b-1",
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not ...}


def line(obj: dict, raw_amount: str | None = None) -> str:
    """One JSON line; ``raw_amount`` is written verbatim as the amount's JSON number text."""
    text = json.dumps(obj, ensure_ascii=False)
    if raw_amount is not None:
        text = text.replace(json.dumps(RAW), raw_amount)
    return text


def run(
    *payloads: str | bytes,
    arrived_at: datetime = ARRIVED,
    window_seconds: int = 300,
    max_clock_skew_seconds: int = 300,
    source: str = "kafka",
) -> Validated:
    n = len(payloads)
    kafka = source == "kafka"
    batch = RawBatch(
        payloads=list(payloads),
        source=source,
        arrived_at=arrived_at,
        origins=[f"origin-{i}" for i in range(n)],
        kafka_partitions=[7] * n if kafka else None,
        kafka_offsets=[1000 + i for i in range(n)] if kafka else None,
    )
    result = validate(
        batch, window_seconds=window_seconds, max_clock_skew_seconds=max_clock_skew_seconds
    )
    assert result.events.schema == TELEMETRY_RAW.schema
    assert result.rejected.schema == TELEMETRY_REJECTED.schema
    assert result.events.num_rows + result.rejected.num_rows == n
    return result


def accepted(payload: str | bytes, **kwargs: object) -> dict:
    result = run(payload, **kwargs)
    assert result.rejected.to_pylist() == []
    [row] = result.events.to_pylist()
    return row


def rejected_reason(payload: str | bytes, **kwargs: object) -> str:
    result = run(payload, **kwargs)
    assert result.events.num_rows == 0
    [row] = result.rejected.to_pylist()
    return row["reason"]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# ---------------------------------------------------------------- malformed_json


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param("not json at all", id="not-json"),
        pytest.param('{"event_id": "e-1", "event_type": "bet_pla', id="truncated"),
        pytest.param("", id="empty"),
        pytest.param(line(event())[:-1], id="missing-closing-brace"),
        pytest.param(json.dumps([event()]), id="array"),
        pytest.param('"bet_placed"', id="string"),
        pytest.param("42", id="number"),
        pytest.param("null", id="null"),
        pytest.param(b"\xff\xfe{}", id="invalid-utf8"),
        pytest.param(
            line(event()).encode().replace(b'"e-1"', b'"e-\xc3\x28"'), id="invalid-utf8-in-string"
        ),
        # A lone backslash then an invalid UTF-8 byte: not UTF-8, and not JSON either.
        pytest.param(
            line(event(event_type="page_view")).encode().replace(b'"e-1"', b'"e\\\xff"'),
            id="invalid-utf8-after-backslash",
        ),
        pytest.param(line(event()).encode("utf-16"), id="utf16"),
    ],
)
def test_malformed_json(payload: str | bytes) -> None:
    assert rejected_reason(payload) == "malformed_json"


def test_malformed_payload_is_kept_as_original_text() -> None:
    text = '  {"event_id": "e-1", "broken": '
    [row] = run(text).rejected.to_pylist()
    assert row["payload"] == text
    assert row["reason"] == "malformed_json"


def test_valid_utf8_bytes_payload_is_decoded() -> None:
    text = line(event(player_id="jöns-😀"))
    row = accepted(text.encode("utf-8"))
    assert row["player_id"] == "jöns-😀"
    assert row["payload"] == text


# ---------------------------------------------------------------- missing_field


REQUIRED = ("event_id", "event_type", "event_time", "player_id", "site_id")
ID_FIELDS = ("event_id", "player_id", "site_id")


@pytest.mark.parametrize("name", REQUIRED)
@pytest.mark.parametrize("value", [..., "", None], ids=["absent", "empty", "null"])
def test_missing_field(name: str, value: object) -> None:
    assert rejected_reason(line(event(**{name: value}))) == f"missing_field:{name}"


@pytest.mark.parametrize("name", ID_FIELDS)
@pytest.mark.parametrize("value", [123, 0, 4.2, True, ["p-1"], {"id": "p-1"}])
def test_non_string_id_counts_as_missing(name: str, value: object) -> None:
    assert rejected_reason(line(event(**{name: value}))) == f"missing_field:{name}"


# ---------------------------------------------------------------- bad_event_type


@pytest.mark.parametrize(
    "event_type", ["BET_PLACED", "Bet_Placed", "bet placed", "login", "bet_placed ", " deposit"]
)
def test_bad_event_type(event_type: str) -> None:
    assert rejected_reason(line(event(event_type=event_type))) == "bad_event_type"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_contract_event_type_is_accepted(event_type: str) -> None:
    row = accepted(line(event(event_type=event_type)))
    assert row["event_type"] == event_type


# ---------------------------------------------------------------- bad_event_time


@pytest.mark.parametrize(
    "event_time",
    [
        pytest.param("yesterday", id="garbage"),
        pytest.param("2026-11-24T10:00:00", id="naive"),
        pytest.param("2026-11-24T10:00:00.123456", id="naive-fraction"),
        pytest.param("2026-11-24", id="date-only"),
        pytest.param("2026-11-24+00:00", id="date-with-offset"),
        pytest.param("10:00:00Z", id="time-only"),
        pytest.param("2026-13-24T10:00:00Z", id="month-13"),
        pytest.param("2026-11-24T25:00:00Z", id="hour-25"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param(-1, id="negative-epoch-ms"),
        pytest.param(-1795600000000, id="large-negative-epoch-ms"),
        pytest.param(10**20, id="epoch-ms-out-of-range"),
        pytest.param(["2026-11-24T10:00:00Z"], id="list"),
        pytest.param({"ts": 1795600000000}, id="object"),
        # Not RFC 3339 although Python's ISO 8601 parser takes them.
        pytest.param("20261124T100000+0000", id="iso-basic-format"),
        pytest.param("2026-W48-2T10:00:00Z", id="iso-week-date"),
        pytest.param("2026-11-24T10:00+00:00", id="no-seconds"),
    ],
)
def test_bad_event_time(event_time: object) -> None:
    assert rejected_reason(line(event(event_time=event_time))) == "bad_event_time"


@pytest.mark.parametrize("raw", ["1795600000000.0", "1795600000000.5", "1.7956e12"])
def test_float_epoch_is_bad_event_time(raw: str) -> None:
    assert rejected_reason(line(event(event_time=RAW), raw_amount=raw)) == "bad_event_time"


@pytest.mark.parametrize(
    ("event_time", "expected"),
    [
        ("2026-11-24T10:00:00.123456+02:00", utc(2026, 11, 24, 8, 0, 0, 123456)),
        ("2026-11-24T10:00:00Z", utc(2026, 11, 24, 10)),
        ("2026-11-24T10:00:00+00:00", utc(2026, 11, 24, 10)),
        ("2026-11-24T10:00:00-05:30", utc(2026, 11, 24, 15, 30)),
        ("2026-11-24T10:00:00.5Z", utc(2026, 11, 24, 10, 0, 0, 500000)),
        # RFC 3339 section 5.6: "T" and "Z" may be lower case.
        ("2026-11-24t10:00:00z", utc(2026, 11, 24, 10)),
        (1795600000000, utc(2026, 11, 25, 9, 46, 40)),
        (1795600000123, utc(2026, 11, 25, 9, 46, 40, 123000)),
        (0, utc(1970, 1, 1)),
    ],
)
def test_event_time_is_stored_in_utc(event_time: object, expected: datetime) -> None:
    row = accepted(line(event(event_time=event_time)))
    assert row["event_time"] == expected
    assert row["event_time"].utcoffset().total_seconds() == 0


# ---------------------------------------------------------------- bad_amount


BAD_AMOUNTS = [
    pytest.param(..., None, id="missing"),
    pytest.param(None, None, id="null"),
    pytest.param(-1, None, id="negative-int"),
    pytest.param("-0.01", None, id="negative-string"),
    pytest.param(RAW, "-12.5", id="negative-number"),
    pytest.param("abc", None, id="abc"),
    pytest.param("", None, id="empty-string"),
    pytest.param("NaN", None, id="nan-string"),
    pytest.param("Infinity", None, id="infinity-string"),
    pytest.param(RAW, "NaN", id="nan-literal"),
    pytest.param(RAW, "Infinity", id="infinity-literal"),
    pytest.param(True, None, id="true"),
    pytest.param(False, None, id="false"),
    pytest.param(RAW, "1.005", id="three-decimals-number"),
    pytest.param("1.005", None, id="three-decimals-string"),
    pytest.param(RAW, "0.30000000000000004", id="binary-float-noise"),
    pytest.param("12,50", None, id="comma"),
    pytest.param("€12.50", None, id="currency-symbol"),
    pytest.param([12], None, id="list"),
    pytest.param({"value": 12}, None, id="object"),
    pytest.param(10**16, None, id="over-decimal-18-2"),
]


@pytest.mark.parametrize("event_type", MONEY_TYPES)
@pytest.mark.parametrize(("amount", "raw"), BAD_AMOUNTS)
def test_bad_amount(event_type: str, amount: object, raw: str | None) -> None:
    payload = line(event(event_type=event_type, amount=amount), raw_amount=raw)
    assert rejected_reason(payload) == "bad_amount"


@pytest.mark.parametrize("event_type", OTHER_TYPES)
@pytest.mark.parametrize(
    ("amount", "raw"),
    [
        pytest.param("abc", None, id="abc"),
        pytest.param(-5, None, id="negative"),
        pytest.param(RAW, "1.005", id="three-decimals"),
        pytest.param(True, None, id="bool"),
        pytest.param(..., None, id="missing"),
        pytest.param("12.10", None, id="valid-but-ignored"),
    ],
)
def test_amount_ignored_for_non_money_types(
    event_type: str, amount: object, raw: str | None
) -> None:
    payload = line(event(event_type=event_type, amount=amount), raw_amount=raw)
    row = accepted(payload)
    assert row["amount"] is None
    assert row["payload"] == payload


@pytest.mark.parametrize("event_type", MONEY_TYPES)
@pytest.mark.parametrize(
    ("amount", "raw", "expected"),
    [
        pytest.param("12.10", None, "12.10", id="decimal-string"),
        pytest.param("12.1", None, "12.10", id="one-decimal-string"),
        pytest.param(RAW, "12.1", "12.10", id="json-number-12.1"),
        pytest.param(RAW, "0.30", "0.30", id="json-number-0.30"),
        pytest.param(RAW, "0.1", "0.10", id="json-number-0.1"),
        pytest.param(RAW, "12.100", "12.10", id="trailing-zero"),
        pytest.param(12, None, "12.00", id="json-integer"),
        pytest.param(0, None, "0.00", id="zero"),
        pytest.param("0", None, "0.00", id="zero-string"),
        pytest.param(RAW, "1234567890123456.78", "1234567890123456.78", id="large-number"),
        pytest.param("9999999999999999.99", None, "9999999999999999.99", id="max-decimal-18-2"),
        pytest.param(RAW, "1e3", "1000.00", id="exponent"),
    ],
)
def test_amount_stored_as_exact_decimal(
    event_type: str, amount: object, raw: str | None, expected: str
) -> None:
    row = accepted(line(event(event_type=event_type, amount=amount), raw_amount=raw))
    assert isinstance(row["amount"], Decimal)
    assert str(row["amount"]) == expected
    assert row["amount"] == Decimal(expected)


# ---------------------------------------------------------------- future_event


@pytest.mark.parametrize(
    ("event_time", "skew", "reason"),
    [
        ("2026-11-25T12:05:00.000001Z", 300, "future_event"),
        ("2026-11-25T12:05:00Z", 300, None),  # exactly at the bound
        ("2026-11-25T14:04:59+02:00", 300, None),
        ("2026-11-25T14:05:01+02:00", 300, "future_event"),
        ("2026-11-25T12:00:00Z", 0, None),
        ("2026-11-25T12:00:00.000001Z", 0, "future_event"),
        ("2026-11-25T13:00:00Z", 3600, None),
        ("2026-11-26T12:00:00Z", 300, "future_event"),
        (1795608300000, 300, None),  # 2026-11-25T12:05:00Z in epoch ms
        (1795608300001, 300, "future_event"),
        ("2020-01-01T00:00:00Z", 300, None),  # far past is valid (late data)
    ],
)
def test_future_event(event_time: object, skew: int, reason: str | None) -> None:
    payload = line(event(event_time=event_time))
    if reason is None:
        assert accepted(payload, max_clock_skew_seconds=skew)["event_id"] == "e-1"
    else:
        assert rejected_reason(payload, max_clock_skew_seconds=skew) == reason


# ---------------------------------------------------------------- stored values


def test_valid_event_row() -> None:
    payload = line(event(amount="12.50", currency="eur"))
    row = accepted(payload)
    assert row == {
        "event_id": "e-1",
        "event_type": "bet_placed",
        "event_time": utc(2026, 11, 24, 10),
        "player_id": "p-1",
        "site_id": "s-1",
        "amount": Decimal("12.50"),
        "currency": "EUR",
        "bet_id": "b-1",
        "window_start": utc(2026, 11, 24, 10),
        "event_date": date(2026, 11, 24),
        "ingest_time": ARRIVED,
        "source": "kafka",
        "kafka_partition": 7,
        "kafka_offset": 1000,
        "arrived_late": False,
        "payload": payload,
    }


@pytest.mark.parametrize(
    ("currency", "expected"),
    [("eur", "EUR"), ("gBp", "GBP"), ("SEK", "SEK"), (..., None), (None, None)],
)
def test_currency_normalised(currency: object, expected: str | None) -> None:
    assert accepted(line(event(currency=currency)))["currency"] == expected


@pytest.mark.parametrize(("bet_id", "expected"), [("b-9", "b-9"), (..., None), (None, None)])
def test_bet_id_optional(bet_id: object, expected: str | None) -> None:
    assert accepted(line(event(bet_id=bet_id)))["bet_id"] == expected


def test_unicode_and_extra_fields_kept_verbatim() -> None:
    obj = event(
        event_id="évènement-🎲-1",
        player_id="玩家-42",
        site_id="sité-ñ",
        device={"os": "Android", "tags": ["ü", 1, None, 2.50]},
        note='line\nbreak "quoted" \\ back',
        score=0.10,
    )
    payload = line(obj)
    row = accepted(payload)
    assert (row["event_id"], row["player_id"], row["site_id"]) == (
        "évènement-🎲-1",
        "玩家-42",
        "sité-ñ",
    )
    assert row["payload"] == payload
    assert json.loads(row["payload"]) == obj


def test_payload_text_kept_byte_for_byte() -> None:
    payload = (
        '{ "event_id":"e-1" , "event_type":"deposit","event_time":"2026-11-24T10:00:00Z",'
        '"player_id":"p-1","site_id":"s-1","amount":12.10,"extra":{"b":2,"a":1},'
        '"e\\u00e9":"\\u00e9"}'
    )
    row = accepted(payload)
    assert row["payload"] == payload
    assert str(row["amount"]) == "12.10"


@pytest.mark.parametrize(
    ("event_time", "window_seconds", "window_start"),
    [
        ("2026-11-24T10:04:59.999999Z", 300, utc(2026, 11, 24, 10, 0)),
        ("2026-11-24T10:05:00Z", 300, utc(2026, 11, 24, 10, 5)),
        ("2026-11-24T10:00:00Z", 300, utc(2026, 11, 24, 10, 0)),
        ("2026-11-24T10:09:59+00:00", 300, utc(2026, 11, 24, 10, 5)),
        ("2026-11-24T12:07:30+02:00", 300, utc(2026, 11, 24, 10, 5)),
        ("2026-11-24T10:59:59.999999Z", 3600, utc(2026, 11, 24, 10, 0)),
        ("2026-11-24T10:01:59Z", 60, utc(2026, 11, 24, 10, 1)),
        ("2026-11-24T10:14:00Z", 600, utc(2026, 11, 24, 10, 10)),
        ("2026-11-24T23:59:59.999999Z", 300, utc(2026, 11, 24, 23, 55)),
    ],
)
def test_window_start_aligned_to_epoch(
    event_time: str, window_seconds: int, window_start: datetime
) -> None:
    row = accepted(line(event(event_time=event_time)), window_seconds=window_seconds)
    assert row["window_start"] == window_start


@pytest.mark.parametrize(
    ("event_time", "event_date"),
    [
        ("2026-11-24T23:59:59+00:00", date(2026, 11, 24)),
        ("2026-11-25T00:30:00+02:00", date(2026, 11, 24)),
        ("2026-11-24T23:30:00-02:00", date(2026, 11, 25)),
        ("2026-11-25T00:00:00Z", date(2026, 11, 25)),
        (1795564800000, date(2026, 11, 25)),  # 2026-11-25T00:00:00Z
        (1795564799999, date(2026, 11, 24)),
    ],
)
def test_event_date_is_utc_date(event_time: object, event_date: date) -> None:
    assert accepted(line(event(event_time=event_time)))["event_date"] == event_date


# ---------------------------------------------------------------- batches


def test_mixed_batch_keeps_every_line_exactly_once() -> None:
    payloads: list[str | bytes] = [
        line(event(event_id="ok-1")),
        "{not json",
        line(event(event_id="ok-2", event_type="page_view", amount="abc")),
        line(event(event_id="bad-type", event_type="BET_PLACED")),
        line(event(event_id="bad-time", event_time="2026-11-24T10:00:00")),
        line(event(event_id="ok-3", event_time=1795600000000)).encode(),
        line(event(event_id="bad-amount", amount=-1)),
        line(event(event_id="future", event_time="2027-01-01T00:00:00Z")),
        line(event(player_id="")),
        json.dumps([1, 2]),
        line(event(event_id="ok-1")),  # a second delivery is still a valid line here
    ]
    result = run(*payloads)
    events = result.events.to_pylist()
    rejected = result.rejected.to_pylist()

    assert [row["event_id"] for row in events] == ["ok-1", "ok-2", "ok-3", "ok-1"]
    assert [row["kafka_offset"] for row in events] == [1000, 1002, 1005, 1010]
    assert [(row["origin"], row["kafka_offset"], row["reason"]) for row in rejected] == [
        ("origin-1", 1001, "malformed_json"),
        ("origin-3", 1003, "bad_event_type"),
        ("origin-4", 1004, "bad_event_time"),
        ("origin-6", 1006, "bad_amount"),
        ("origin-7", 1007, "future_event"),
        ("origin-8", 1008, "missing_field:player_id"),
        ("origin-9", 1009, "malformed_json"),
    ]
    offsets = sorted(row["kafka_offset"] for row in events + rejected)
    assert offsets == list(range(1000, 1000 + len(payloads)))
    texts = [p.decode() if isinstance(p, bytes) else p for p in payloads]
    for row in events + rejected:
        assert row["payload"] == texts[row["kafka_offset"] - 1000]


def test_events_of_both_paths_keep_message_order_and_origin() -> None:
    """An escape sends a valid event through the per-message path: the events still come in
    message order, each with its own offset, payload and (rejected) origin."""
    payloads = [
        line(event(event_id="plain-0")),
        line(event(event_id="escaped-1", site_id="caf\u00e9")).replace("\u00e9", "\\u00e9"),
        "not json",
        line(event(event_id="plain-3")),
    ]
    batch = RawBatch(payloads, "kafka", ARRIVED, Origins("kafka:t:7:", range(40, 44)),
                     [7] * 4, list(range(40, 44)))  # fmt: skip
    result = validate(batch, window_seconds=300, max_clock_skew_seconds=300)

    events = result.events.to_pylist()
    assert [(e["event_id"], e["kafka_offset"]) for e in events] == [
        ("plain-0", 40), ("escaped-1", 41), ("plain-3", 43)
    ]  # fmt: skip
    assert [e["payload"] for e in events] == [payloads[0], payloads[1], payloads[3]]
    assert [(r["origin"], r["kafka_offset"]) for r in result.rejected.to_pylist()] == [
        ("kafka:t:7:42", 42)
    ]


def test_origins_are_made_when_asked() -> None:
    origins = Origins("file:/x.jsonl:", [3, 5, 8])
    assert (len(origins), origins[1], origins[-1]) == (3, "file:/x.jsonl:5", "file:/x.jsonl:8")
    assert list(origins) == origins[:] == ["file:/x.jsonl:3", "file:/x.jsonl:5", "file:/x.jsonl:8"]


def test_rejected_rows_carry_kafka_origin() -> None:
    payload = line(event(event_type="nope"))
    rows = run("ok?", payload).rejected.to_pylist()
    assert [r["reason"] for r in rows] == ["malformed_json", "bad_event_type"]
    row = rows[1]
    assert row == {
        "ingest_time": ARRIVED,
        "source": "kafka",
        "kafka_partition": 7,
        "kafka_offset": 1001,
        "reason": "bad_event_type",
        "payload": payload,
        "origin": "origin-1",
    }


def test_file_rows_have_no_kafka_position() -> None:
    result = run(line(event()), "garbage", source="file")
    [good] = result.events.to_pylist()
    [bad] = result.rejected.to_pylist()
    assert (good["source"], good["kafka_partition"], good["kafka_offset"]) == ("file", None, None)
    assert (bad["source"], bad["kafka_partition"], bad["kafka_offset"]) == ("file", None, None)
    assert (bad["origin"], bad["reason"], bad["payload"]) == (
        "origin-1",
        "malformed_json",
        "garbage",
    )


@pytest.mark.parametrize(
    ("data", "reason"), hostile_lines(), ids=[f"line-{i}" for i in range(len(hostile_lines()))]
)
def test_hostile_line(data: bytes, reason: str | None) -> None:
    """Each hostile class alone: its precise reason (or stored), its payload kept whole."""
    if reason is None:
        assert accepted(data)["payload"] == data.decode()
    else:
        [row] = run(data).rejected.to_pylist()
        assert (row["reason"], row["payload"]) == (reason, readable(data))


def test_empty_batch() -> None:
    result = run()
    assert result.events.num_rows == 0
    assert result.rejected.num_rows == 0
