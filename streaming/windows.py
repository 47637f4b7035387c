"""The window logic, in one place: event batches -> per-site, per-window figures.

:class:`SiteWindowStats` is the one composite transform behind every gold figure. The stream
runs it over Kafka with watermarks and late firings; reprocessing runs it over a range of
``telemetry_raw``. Its elements are Arrow batches of validated events, pre-aggregated per
(window, site) with vectorised Arrow kernels before anything is shuffled.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming

from betlake.core.contract import EVENT_COLUMNS, MONEY_EVENT_TYPES
from betlake.core.lake import Lake
from betlake.core.reference import ReferenceCache
from betlake.core.windowing import US, Windowing

_EXACT = decimal.Context(prec=60)  # sums of products never lose a digit
_CENT = Decimal("0.01")
_MONEY_SUMS = {  # accumulator field -> event type whose amounts it sums
    "stake": "bet_placed",
    "payout": "bet_settled",
    "deposits": "deposit",
    "withdrawals": "withdrawal",
}


def _no_players() -> pa.Array:
    return pa.array([], pa.string())


def _union(left: pa.Array, right: pa.Array) -> pa.Array:
    """Distinct player ids of both (either may be empty)."""
    if not len(right):
        return left
    if not len(left):
        return right
    return pc.unique(pa.concat_arrays([left, right]))


@dataclass(slots=True)
class SiteWindow:
    """The running figures of one site in one window; money sums are exact, unrounded EUR.
    Player ids are kept as distinct Arrow arrays: compact in state, cheap to encode."""

    events: int = 0
    players: pa.Array = field(default_factory=_no_players)
    vip_players: pa.Array = field(default_factory=_no_players)
    sessions: int = 0
    bets: int = 0
    stake: Decimal = Decimal(0)
    payout: Decimal = Decimal(0)
    deposits: Decimal = Decimal(0)
    withdrawals: Decimal = Decimal(0)
    unpriced_events: int = 0

    def merge(self, other: SiteWindow) -> SiteWindow:
        """Add ``other`` into this one and return it."""
        self.events += other.events
        self.players = _union(self.players, other.players)
        self.vip_players = _union(self.vip_players, other.vip_players)
        self.sessions += other.sessions
        self.bets += other.bets
        self.stake = _EXACT.add(self.stake, other.stake)
        self.payout = _EXACT.add(self.payout, other.payout)
        self.deposits = _EXACT.add(self.deposits, other.deposits)
        self.withdrawals = _EXACT.add(self.withdrawals, other.withdrawals)
        self.unpriced_events += other.unpriced_events
        return self


Sites = dict[str, SiteWindow]  # site_id -> its figures, in one window


def merge_sites(into: Sites, other: Sites) -> Sites:
    """Add each site's figures of ``other`` into ``into`` and return it (``other`` is left as
    it was: an element is never changed)."""
    for site_id, figures in other.items():
        into[site_id] = into.get(site_id, SiteWindow()).merge(figures)
    return into


def _compact(values: pa.Array) -> pa.Array:
    """A slice as an array of its own (a pickled slice may carry its parent's buffers)."""
    return pa.concat_arrays([values]) if len(values) else _no_players()


def _cents(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=decimal.ROUND_HALF_EVEN)


class PreAggregateFn(beam.DoFn):
    """An Arrow batch of events -> one ``(window start, Sites)`` per window in it.

    Joins the reference snapshot (site currency, VIP players, EUR rates) with vectorised
    kernels; each output keeps the batch's timestamp (see WindowPanesFn).
    """

    def __init__(self, windowing: Windowing, lake: Lake) -> None:
        self.windowing = windowing
        self.lake = lake

    def setup(self) -> None:
        self.reference = ReferenceCache(self.lake)

    def process(self, batch: pa.RecordBatch | pa.Table):
        reference = self.reference.get()
        events = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        if not events.num_rows:
            return
        events = events.select(list(EVENT_COLUMNS))
        event_type = events.column("event_type")
        player_id = events.column("player_id")
        site_currency = pc.take(
            reference.sites.column("currency"), reference.site_index(events.column("site_id"))
        )
        currency = pc.coalesce(events.column("currency"), site_currency)
        rate = reference.eur_rates(currency, events.column("event_time"))
        eur = pc.multiply(events.column("amount"), rate)
        is_money = pc.is_in(event_type, value_set=pa.array(sorted(MONEY_EVENT_TYPES)))
        time_us = pc.cast(events.column("event_time"), pa.int64()).to_numpy(zero_copy_only=False)
        columns = {
            "window_start": pa.array(self.windowing.start_us(time_us)),
            "site_id": events.column("site_id"),
            "player_id": player_id,
            "vip_player": pc.if_else(reference.is_vip(player_id), player_id, None),
            "session": pc.cast(pc.equal(event_type, "session_start"), pa.int64()),
            "bet": pc.cast(pc.equal(event_type, "bet_placed"), pa.int64()),
            "unpriced": pc.cast(pc.and_(is_money, pc.is_null(rate)), pa.int64()),
            **{
                name: pc.if_else(pc.equal(event_type, kind), eur, None)
                for name, kind in _MONEY_SUMS.items()
            },
        }
        grouped = pa.table(columns).group_by(["window_start", "site_id"], use_threads=False)
        partials = grouped.aggregate(
            [
                ("player_id", "count"),
                ("player_id", "distinct"),
                ("vip_player", "distinct", pc.CountOptions(mode="only_valid")),
                ("session", "sum"),
                ("bet", "sum"),
                ("unpriced", "sum"),
                *((name, "sum") for name in _MONEY_SUMS),
            ]
        )
        players = partials.column("player_id_distinct").combine_chunks()
        vip_players = partials.column("vip_player_distinct").combine_chunks()
        windows: dict[int, Sites] = {}
        for i, row in enumerate(
            partials.drop_columns(["player_id_distinct", "vip_player_distinct"]).to_pylist()
        ):
            windows.setdefault(row["window_start"], {})[row["site_id"]] = SiteWindow(
                events=row["player_id_count"],
                players=_compact(players[i].values),
                vip_players=_compact(vip_players[i].values),
                sessions=row["session_sum"],
                bets=row["bet_sum"],
                unpriced_events=row["unpriced_sum"],
                **{name: row[f"{name}_sum"] or Decimal(0) for name in _MONEY_SUMS},
            )
        yield from windows.items()


class MergeSitesFn(beam.CombineFn):
    """Merges the partial figures of one window, site by site."""

    def create_accumulator(self) -> Sites:
        return {}

    def add_input(self, accumulator: Sites, partial: Sites) -> Sites:
        return merge_sites(accumulator, partial)

    def merge_accumulators(self, accumulators) -> Sites:
        merged: Sites = {}
        for accumulator in accumulators:
            merge_sites(merged, accumulator)
        return merged

    def extract_output(self, accumulator: Sites) -> Sites:
        return accumulator


class SitePane(NamedTuple):
    """One firing of one site's window, carried out of Beam's windows: which window, its
    figures, and the pane's timing (``PaneInfoTiming``)."""

    site_id: str
    window_start_us: int
    window_end_us: int
    figures: SiteWindow
    timing: int


class BatchPaneFn(beam.DoFn):
    """``(window start, Sites)`` -> the window's one :class:`SitePane` per site."""

    def __init__(self, windowing: Windowing) -> None:
        self.size_us = windowing.window_us

    def process(self, element: tuple[int, Sites]):
        start, sites = element
        for site_id, figures in sites.items():
            yield SitePane(site_id, start, start + self.size_us, figures, PaneInfoTiming.ON_TIME)


class WindowPanesFn(beam.DoFn):
    """``(window start, Sites)`` partials -> a :class:`SitePane` per site and firing, each
    with the site's whole figures in the window: ON_TIME for every site once the watermark
    passes the window's end, then LATE at once for each site of every partial that comes
    after, until the allowed lateness has passed.

    Per-window state and event-time timers rather than Beam's windows and triggers: on
    Prism (Beam 2.77) a GroupByKey dropped the partials that reached it in the bundle that moved
    the watermark past their window's end (the soak's figure check: the last read of most
    windows was missing from gold, and no LATE pane brought it). A partial keeps the timestamp
    of the read it came from, which held the watermark until it was read.
    """

    # One state value per window, (phase, sites): on Prism every read of a state the bundle
    # has not written is a round trip to the runner (it gives no cache tokens), so one value
    # read once per window and bundle, not one per site (a read touches every site of its
    # windows) or two per partial.
    WINDOW = ReadModifyWriteStateSpec("window", PickleCoder())
    END = TimerSpec("end", TimeDomain.WATERMARK)
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)
    OPEN, FIRED, CLOSED = 0, 1, 2

    def __init__(self, windowing: Windowing) -> None:
        self.size_us = windowing.window_us
        self.keep_us = windowing.allowed_lateness_seconds * US

    def process(
        self,
        element: tuple[int, Sites],
        window=beam.DoFn.StateParam(WINDOW),
        end=beam.DoFn.TimerParam(END),
        expiry=beam.DoFn.TimerParam(EXPIRY),
    ):
        start, partial = element
        kept = window.read()
        if kept is None:  # the window's first partial: its timers
            end.set(Timestamp(micros=start + self.size_us - 1))  # the window's last µs
            expiry.set(Timestamp(micros=start + self.size_us + self.keep_us))
            kept = (self.OPEN, {})
        reached, running = kept
        if reached == self.CLOSED:  # past the lateness: the source left it out
            return
        window.write((reached, merge_sites(running, partial)))
        if reached == self.FIRED:
            yield from self._panes(start, running, partial, PaneInfoTiming.LATE)

    @on_timer(END)
    def on_time(self, start=beam.DoFn.KeyParam, window=beam.DoFn.StateParam(WINDOW)):
        _, sites = window.read() or (self.OPEN, {})
        window.write((self.FIRED, sites))
        yield from self._panes(start, sites, sites, PaneInfoTiming.ON_TIME)

    def _panes(self, start: int, sites: Sites, which: Sites, timing: int):
        """The panes of the sites in ``which``, with their figures in ``sites``."""
        for site_id in which:
            yield SitePane(site_id, start, start + self.size_us, sites[site_id], timing)

    @on_timer(EXPIRY)
    def forget(
        self,
        fire_at=beam.DoFn.TimestampParam,
        window=beam.DoFn.StateParam(WINDOW),
        expiry=beam.DoFn.TimerParam(EXPIRY),
    ):
        """Forget the figures; keep a tombstone for one more lateness, then nothing."""
        reached, _ = window.read() or (self.CLOSED, None)
        if reached == self.CLOSED:
            window.clear()
        else:
            window.write((self.CLOSED, None))
            expiry.set(Timestamp(micros=fire_at.micros + self.keep_us))


class ToStatsRowFn(beam.DoFn):
    """A :class:`SitePane` -> a ``site_window_stats`` row, labelled by its pane timing
    (ON_TIME, LATE) or, in a batch run, BATCH."""

    def __init__(self, lake: Lake, batch: bool) -> None:
        self.lake = lake
        self.batch = batch

    def setup(self) -> None:
        self.reference = ReferenceCache(self.lake)

    def process(self, pane: SitePane):
        site_id, start_us, end_us, figures, timing = pane
        attributes = self.reference.get().site_attributes.get(site_id, {})
        stake, payout = _cents(figures.stake), _cents(figures.payout)
        start = Timestamp(micros=start_us).to_utc_datetime(has_tz=True)
        yield {
            "window_start": start,
            "window_end": Timestamp(micros=end_us).to_utc_datetime(has_tz=True),
            "site_id": site_id,
            "site_name": attributes.get("name"),
            "brand": attributes.get("brand"),
            "country": attributes.get("country"),
            "events": figures.events,
            "active_players": len(figures.players),
            "vip_players": len(figures.vip_players),
            "sessions": figures.sessions,
            "bets": figures.bets,
            "stake_eur": stake,
            "payout_eur": payout,
            "ggr_eur": stake - payout,
            "deposits_eur": _cents(figures.deposits),
            "withdrawals_eur": _cents(figures.withdrawals),
            "unpriced_events": figures.unpriced_events,
            "pane": "BATCH" if self.batch else PaneInfoTiming.to_string(timing),
            "computed_at": datetime.now(UTC),
            "window_date": start.date(),
        }


class SiteWindowStats(beam.PTransform):
    """Arrow batches of validated events -> ``site_window_stats`` rows, one per firing.

    Fixed event-time windows aligned to the epoch, named in the key (the window's start) rather
    than by Beam's windows, in both shapes; each window's value holds its sites' figures. The
    reference data is read from the lake and reloaded when it changes. Two shapes of the same
    transform:

    * streaming: a pane fires when the watermark passes the window's end (ON_TIME), then once
      per late partial (LATE) for as long as the window is kept
      (the allowed lateness; the source already left too-late events out);
      every pane carries the site's whole figures in the window (:class:`WindowPanesFn`);
    * batch (``batch=True``): every window gives exactly one row (BATCH), nothing to
      accumulate: the same partials and merge, on any batch runner, the DaskRunner included.
    """

    def __init__(self, lake: Lake, windowing: Windowing, *, batch: bool) -> None:
        super().__init__()
        self.lake = lake
        self.windowing = windowing
        self.batch = batch

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        partials = batches | "PreAggregate" >> beam.ParDo(PreAggregateFn(self.windowing, self.lake))
        if self.batch:
            panes = (
                partials
                | "MergePerWindow" >> beam.CombinePerKey(MergeSitesFn())
                | "BatchPane" >> beam.ParDo(BatchPaneFn(self.windowing))
            )
        else:
            panes = partials | "WindowPanes" >> beam.ParDo(WindowPanesFn(self.windowing))
        return panes | "ToStatsRows" >> beam.ParDo(ToStatsRowFn(self.lake, self.batch))
