"""Discard and restore: taking events out of the figures on purpose, with a trace.

Discarded events move from ``telemetry_raw`` to ``telemetry_discarded`` with who, when and why;
a restore puts them back and stamps the audit rows. Either way the windows they touch must be
recomputed (the command line launches that run): it is the one path by which a gold row may
lose events.
"""

from __future__ import annotations

import getpass
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from betlake.core.config import BetlakeError, Settings
from betlake.core.contract import TELEMETRY_DISCARDED, TELEMETRY_RAW, TIMESTAMP
from betlake.core.lake import Lake
from betlake.core.windowing import epoch_us


@dataclass(frozen=True)
class Discard:
    """What a discard or restore did: its id, how many events, and the windows to recompute."""

    discard_id: str
    events: int
    first_window: datetime
    end_window: datetime


def _windows(events: pa.Table, window_seconds: int) -> tuple[datetime, datetime]:
    starts = pc.cast(events.column("window_start"), pa.int64()).to_numpy()
    first, last = int(starts.min()), int(starts.max()) + window_seconds * 1_000_000
    return (datetime.fromtimestamp(first / 1e6, UTC), datetime.fromtimestamp(last / 1e6, UTC))


def _stamp(rows: int, at: datetime) -> pa.Array:
    """A timestamp column holding ``at`` in each of ``rows`` rows."""
    return pa.array(np.full(rows, epoch_us(at), np.int64)).cast(TIMESTAMP)


def discard(
    settings: Settings,
    start: datetime,
    end: datetime,
    reason: str,
    site: str | None = None,
    player: str | None = None,
    source: str | None = None,
) -> Discard:
    """Move the events with event_time in [start, end) (and the given site, player, source)
    from telemetry_raw to telemetry_discarded."""
    if not reason.strip():
        raise BetlakeError("a discard needs a --reason")
    lake = Lake.of(settings)
    events = lake.scan_range(
        TELEMETRY_RAW, start, end, column="event_time", day_column="event_date"
    )
    for column, wanted in (("site_id", site), ("player_id", player), ("source", source)):
        if wanted is not None:
            events = events.filter(pc.equal(events.column(column), wanted))
    if not events.num_rows:
        raise BetlakeError("no event in telemetry_raw matches: nothing discarded")
    now = datetime.now(UTC)
    discard_id = f"discard-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    n = events.num_rows
    audit = events
    for name, value, dtype in (
        ("discard_id", discard_id, pa.string()),
        ("discarded_by", getpass.getuser(), pa.string()),
        ("discard_reason", reason, pa.string()),
    ):
        audit = audit.append_column(name, pa.array([value] * n, dtype))
    audit = audit.append_column("discarded_at", _stamp(n, now)).append_column(
        "restored_at", pa.nulls(n, TIMESTAMP)
    )
    lake.append(TELEMETRY_DISCARDED, audit)  # first the trace, then the removal (one commit)
    lake.delete_matching(TELEMETRY_RAW, events)
    return Discard(discard_id, n, *_windows(events, settings.window_seconds))


def restore(settings: Settings, discard_id: str) -> Discard:
    """Put the events of a discard back into telemetry_raw and stamp its audit rows."""
    lake = Lake.of(settings)
    audit = lake.scan(TELEMETRY_DISCARDED)
    audit = audit.filter(
        pc.and_(pc.equal(audit.column("discard_id"), discard_id), pc.is_null(audit["restored_at"]))
    )
    if not audit.num_rows:
        raise BetlakeError(f"no discard {discard_id!r} waiting to be restored")
    events = audit.select(TELEMETRY_RAW.schema.names)
    lake.insert_new(TELEMETRY_RAW, events)
    restored_at = _stamp(audit.num_rows, datetime.now(UTC))
    stamped = audit.set_column(
        audit.schema.get_field_index("restored_at"), "restored_at", restored_at
    )
    lake.upsert(TELEMETRY_DISCARDED, stamped, update_when="t.restored_at IS NULL")
    return Discard(discard_id, events.num_rows, *_windows(events, settings.window_seconds))
