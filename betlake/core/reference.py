"""Reference data: reading the static CSV sources, checking them, and the lookup snapshot the
window transform joins against (site attributes, VIP players, EUR rates with date fallback)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv

from betlake.core.config import BetlakeError
from betlake.core.contract import BET_SITES, FX_RATES, PLAYERS, RATE, SEGMENTS, TableSpec
from betlake.core.lake import Lake
from betlake.core.windowing import epoch_us

REFERENCE_TABLES = (BET_SITES, PLAYERS, FX_RATES)
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_DAY_US = 86_400_000_000


class ReferenceFileError(BetlakeError):
    """A reference file is missing or cannot be read with the contract's columns."""


def read_reference_csv(spec: TableSpec, folder: Path, loaded_at: datetime) -> pa.Table:
    """Read ``<folder>/<table>.csv`` with the contract's column types, stamped ``loaded_at``."""
    path = folder / f"{spec.name}.csv"
    columns = [f for f in spec.schema if f.name != "loaded_at"]
    try:
        table = csv.read_csv(
            path,
            convert_options=csv.ConvertOptions(
                column_types={f.name: f.type for f in columns},
                include_columns=[f.name for f in columns],
                strings_can_be_null=True,
            ),
        )
    except FileNotFoundError:
        raise ReferenceFileError(f"{path}: file not found") from None
    except (pa.ArrowInvalid, pa.ArrowKeyError) as error:
        raise ReferenceFileError(f"{path}: {str(error).splitlines()[0]}") from None
    stamp = pa.array(np.full(table.num_rows, epoch_us(loaded_at), np.int64)).cast(
        spec.schema.field("loaded_at").type
    )
    table = table.append_column("loaded_at", stamp)
    try:
        return table.cast(spec.schema)
    except (pa.ArrowInvalid, ValueError) as error:
        raise ReferenceFileError(f"{path}: {str(error).splitlines()[0]}") from None


# ---------------------------------------------------------------- checks


def duplicate_keys(table: pa.Table, key: tuple[str, ...]) -> list[str]:
    """Key values that occur more than once."""
    counts = table.group_by(list(key)).aggregate([([], "count_all")])
    dupes = counts.filter(pc.greater(counts.column("count_all"), 1))
    return ["|".join(str(row[k]) for k in key) for row in dupes.to_pylist()]


def bad_currency_codes(table: pa.Table) -> list[str]:
    """Currency values that are not three upper-case letters."""
    codes = set(table.column("currency").to_pylist())
    return sorted(str(code) for code in codes if code is None or not _CURRENCY.match(code))


def unpriced_site_currencies(sites: pa.Table, fx_rates: pa.Table) -> list[str]:
    """Site currencies other than EUR with no row in fx_rates."""
    priced = set(fx_rates.column("currency").to_pylist()) | {"EUR"}
    return sorted(set(sites.column("currency").to_pylist()) - priced)


def non_positive_rates(fx_rates: pa.Table) -> list[str]:
    """``date currency`` of rates that are zero or negative."""
    bad = fx_rates.filter(pc.less_equal(fx_rates.column("eur_rate"), 0))
    return [f"{row['date']} {row['currency']}" for row in bad.to_pylist()]


def unknown_segments(players: pa.Table) -> list[str]:
    """Segment values other than vip, regular and new."""
    return sorted(set(players.column("segment").to_pylist()) - set(SEGMENTS))


# ---------------------------------------------------------------- the lookup snapshot


@dataclass(frozen=True)
class Reference:
    """What the window transform joins against, as vectorised lookups over Arrow arrays."""

    sites: pa.Table  # site_id, name, brand, country, currency
    vip_players: pa.Array  # player_id of every vip
    rate_currencies: pa.Array  # currency of each row of the rate grid
    rate_grid: pa.Array  # decimal rates, one row per currency, one column per day, forward-filled
    first_day: int  # epoch day of the grid's first column
    days: int

    @classmethod
    def from_tables(cls, sites: pa.Table, players: pa.Table, fx_rates: pa.Table) -> Reference:
        vip = players.filter(pc.equal(players.column("segment"), "vip")).column("player_id")
        fx = fx_rates.filter(pc.not_equal(fx_rates.column("currency"), "EUR"))
        if fx.num_rows:
            day = pc.cast(fx.column("date"), pa.int32()).to_numpy()
            first_day, days = int(day.min()), int(day.max() - day.min()) + 1
        else:
            day, first_day, days = np.array([], np.int32), 0, 1
        currencies = [*sorted(set(fx.column("currency").to_pylist())), "EUR"]
        grid: list[object] = [None] * (len(currencies) * days)
        row_of = {c: i for i, c in enumerate(currencies)}
        for d, cur, rate in zip(
            day.tolist(),
            fx.column("currency").to_pylist(),
            fx.column("eur_rate").to_pylist(),
            strict=True,
        ):
            grid[row_of[cur] * days + d - first_day] = rate
        for row in range(len(currencies) - 1):  # the latest earlier date stands in for a gap
            for col in range(1, days):
                at = row * days + col
                if grid[at] is None:
                    grid[at] = grid[at - 1]
        eur = (len(currencies) - 1) * days
        grid[eur : eur + days] = [1] * days
        return cls(
            sites=sites.select(["site_id", "name", "brand", "country", "currency"]),
            vip_players=pc.unique(vip.combine_chunks()),
            rate_currencies=pa.array(currencies, pa.string()),
            rate_grid=pa.array(grid, RATE),
            first_day=first_day,
            days=days,
        )

    @classmethod
    def from_lake(cls, lake: Lake) -> Reference:
        """The snapshot of the reference tables as they are in the lake now."""
        missing = [spec.name for spec in REFERENCE_TABLES if lake.version(spec.name) < 0]
        if missing:
            raise BetlakeError(
                f"reference tables not loaded yet: {', '.join(missing)} "
                "(materialise bet_sites, players, fx_rates first: betlake reference)"
            )
        return cls.from_tables(*(lake.scan(spec) for spec in REFERENCE_TABLES))

    @cached_property
    def site_attributes(self) -> dict[str, dict[str, str | None]]:
        """Each known site's name, brand and country, by site_id (for one row at a time)."""
        rows = self.sites.select(["site_id", "name", "brand", "country"]).to_pylist()
        return {row.pop("site_id"): row for row in rows}

    def site_index(self, site_id: pa.Array) -> pa.Array:
        """Row of each site in :attr:`sites`, null where the site is unknown."""
        return pc.index_in(site_id, value_set=self.sites.column("site_id"))

    def is_vip(self, player_id: pa.Array) -> pa.Array:
        return pc.is_in(player_id, value_set=self.vip_players)

    def eur_rates(self, currency: pa.Array, event_time: pa.Array) -> pa.Array:
        """EUR rate of each (currency, UTC date of event_time); null where none applies.

        The rate of the date, else of the latest earlier date; EUR is 1.
        """
        row = pc.index_in(currency, value_set=self.rate_currencies)
        valid = pc.is_valid(row).to_numpy(zero_copy_only=False)
        day = pc.cast(event_time, pa.int64()).to_numpy(zero_copy_only=False) // _DAY_US
        col = np.minimum(day - self.first_day, self.days - 1)
        is_eur = pc.equal(currency, "EUR").to_numpy(zero_copy_only=False)
        col = np.where(is_eur, np.maximum(col, 0), col)
        at = pc.fill_null(row, 0).to_numpy(zero_copy_only=False).astype(np.int64) * self.days + col
        index = pa.array(at, pa.int64(), mask=~valid | (col < 0))
        return pc.take(self.rate_grid, index)


class ReferenceCache:
    """The lake's reference snapshot, reloaded when a reference table gets a new Delta version
    (checked at most every ``refresh_seconds``): what long-running workers join against."""

    def __init__(self, lake: Lake, refresh_seconds: float = 30) -> None:
        self.lake = lake
        self.refresh_seconds = refresh_seconds
        self.versions: tuple[int, ...] = ()
        self.checked = float("-inf")
        self.snapshot: Reference | None = None

    def get(self) -> Reference:
        now = time.monotonic()
        if self.snapshot is None or now - self.checked >= self.refresh_seconds:
            self.checked = now
            versions = tuple(self.lake.version(spec.name) for spec in REFERENCE_TABLES)
            if self.snapshot is None or versions != self.versions:
                self.snapshot, self.versions = Reference.from_lake(self.lake), versions
        return self.snapshot
