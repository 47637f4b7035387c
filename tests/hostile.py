"""Hostile input for the "validation never raises" promise: one line of every known hostile
class, each with what the contract expects of it, written down here by hand (never asked of
:func:`betlake.core.contract.validate`), and a corpus mixing them into thousands of valid events.

An expectation is a reason code, or ``None`` for a line that is in fact a valid event, to be
stored. No line is empty or holds a newline, so a corpus is also a JSON lines file.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from betlake.local.generate import TelemetrySpec, generate_telemetry

START = datetime(2026, 11, 24, tzinfo=UTC)
KIB = 1024
DIGITS = "9" * 5000  # past Python's int-digits limit (4300), under 64 KiB


def event(event_id: str, **fields: object) -> dict:
    """A valid bet_placed event on a reference site, fields added or replaced (... removes)."""
    base: dict = {
        "event_id": event_id,
        "event_type": "bet_placed",
        "event_time": "2026-11-24T00:10:00Z",
        "player_id": "p00001",
        "site_id": "uk-royalspin",
        "amount": "5.00",
        "currency": "GBP",
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not ...}


def encode(obj: object, ensure_ascii: bool = True) -> bytes:
    """JSON text as UTF-8 (escaped to ASCII by default: how a lone surrogate reaches the wire)."""
    return json.dumps(obj, ensure_ascii=ensure_ascii).encode()


def raw_field(obj: dict, name: str, json_text: str) -> bytes:
    """The event with field ``name`` written as this literal JSON text."""
    return encode({**obj, name: "@@"}).replace(b'"@@"', json_text.encode())


def nested(depth: int) -> str:
    """JSON text of arrays nested ``depth`` deep."""
    return "[" * depth + "]" * depth


def padded(event_id: str, size: int) -> bytes:
    """A valid event padded (an extra field) to exactly ``size`` bytes."""
    bare = len(encode(event(event_id, pad="")))
    return encode(event(event_id, pad="x" * (size - bare)))


def hostile_lines() -> list[tuple[bytes, str | None]]:
    """One line of each hostile class and its expected reason (``None``: valid, stored)."""
    return [
        # not UTF-8
        (b"\xff\xfe{}", "malformed_json"),
        (encode(event("h-utf8")).replace(b"h-utf8", b"h-\xc3\x28"), "malformed_json"),
        (encode(event("h-overlong")).replace(b"h-overlong", b"h-\xc0\xaf"), "malformed_json"),
        (encode(event("h-cesu")).replace(b"h-cesu", b"h-\xed\xa0\x80"), "malformed_json"),
        (b"\xef\xbb\xbf" + encode(event("h-bom")), "malformed_json"),
        # strings that are not valid Unicode: lone or reversed surrogates, in values and keys
        (encode(event("h-lone-\ud800")), "malformed_json"),
        (encode(event("h-lone-low", note="\udc00")), "malformed_json"),
        (encode(event("h-lone-key", **{"\udfff": 1})), "malformed_json"),
        (encode(event("h-reversed-\ude00\ud83d")), "malformed_json"),
        (encode(event("h-pair-🎲", player_id="p-🎲")), None),  # escaped as a valid pair
        # nesting
        (nested(5000).encode(), "malformed_json"),
        (raw_field(event("h-deep"), "extra", nested(5000)), "malformed_json"),
        (raw_field(event("h-depth-129"), "extra", nested(128)), "malformed_json"),
        (raw_field(event("h-depth-128"), "extra", nested(127)), None),
        (encode(event("h-brackets-in-string", note="[{" * 5000)), None),
        # not an object, or not JSON
        (b"[]", "malformed_json"),
        (b'"bet_placed"', "malformed_json"),
        (b"42", "malformed_json"),
        (b"null", "malformed_json"),
        (b"   ", "malformed_json"),
        (b"\x00", "malformed_json"),
        (encode(event("h-raw-tab")).replace(b"h-raw-tab", b"h-raw\ttab"), "malformed_json"),
        # huge numbers
        (raw_field(event("h-huge-time"), "event_time", DIGITS), "bad_event_time"),
        (raw_field(event("h-huge-negative-time"), "event_time", "-" + DIGITS), "bad_event_time"),
        (raw_field(event("h-huge-amount"), "amount", DIGITS), "bad_amount"),
        (raw_field(event("h-huge-exponent"), "amount", "1e999999999"), "bad_amount"),
        (raw_field(event("h-nan"), "amount", "NaN"), "bad_amount"),
        (raw_field(event("h-huge-bet-id"), "bet_id", DIGITS), "bad_id"),
        (raw_field(event("h-huge-extra"), "extra", DIGITS), None),
        (raw_field(event("ignored"), "event_id", DIGITS), "missing_field:event_id"),
        (encode(event("h-long-amount", amount="1." + "0" * 100)), None),
        # oversized: over 64 KiB, whatever it holds
        (encode(event("h-" + "x" * 256 * KIB)), "oversized"),
        (padded("h-64k-plus-1", 64 * KIB + 1), "oversized"),
        (padded("h-64k", 64 * KIB), None),
        (b"\xff" * (64 * KIB + 1), "oversized"),
        (nested(40 * KIB).encode(), "oversized"),
        # ids: too long, control characters; other Unicode is fine
        (encode(event("h-" + "x" * 127)), "bad_id"),
        (encode(event("h-" + "x" * 126)), None),
        (encode(event("h-nul-\x00")), "bad_id"),
        (encode(event("h-newline", player_id="p\n1")), "bad_id"),
        (encode(event("h-del", site_id="s\x7f")), "bad_id"),
        (encode(event("h-c1", bet_id="b\x85")), "bad_id"),
        (encode(event("h-long-bet", bet_id="b" * 129)), "bad_id"),
        (encode(event("h-rtl", player_id="p\u200f\u202e1"), ensure_ascii=False), None),
        (encode(event("h-astral", site_id="😀" * 128), ensure_ascii=False), None),
        (encode(event("h-nul-in-note", note="a\x00b")), None),
        # the classic reasons still hold
        (encode(event("h-missing", site_id=...)), "missing_field:site_id"),
        (encode(event("h-type", event_type="BET")), "bad_event_type"),
        (encode(event("h-year-0", event_time="0001-01-01T00:00:00+01:00")), "bad_event_time"),
        (encode(event("h-negative", amount="-1")), "bad_amount"),
        (encode(event("h-future", event_time="2100-01-01T00:00:00Z")), "future_event"),
    ]


def corpus(reference: Path, count: int = 3000, seed: int = 11) -> list[tuple[bytes, str | None]]:
    """``count`` valid generated events (an hour from :data:`START`, sites and players of the
    ``reference``) with every hostile line mixed in at random places."""
    spec = TelemetrySpec(count=count, start=START, span=timedelta(hours=1), seed=seed,
                         duplicate_fraction=0, malformed_fraction=0)  # fmt: skip
    lines: list[tuple[bytes, str | None]] = [
        (line.encode(), None) for _, line in generate_telemetry(spec, reference)
    ]
    rng = random.Random(seed)
    for hostile in hostile_lines():
        lines.insert(rng.randrange(len(lines) + 1), hostile)
    return lines


def readable(data: bytes) -> str:
    """The payload a rejected line is stored with: its UTF-8 text, a bad byte as ``\\xNN``."""
    return data.decode("utf-8", "backslashreplace")
