"""A chart of GGR and active players per site per window, for people who would rather look."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from matplotlib.figure import Figure

from betlake.core.config import BetlakeError
from betlake.core.lake import Lake

TOP_SITES = 8  # the sites with the highest GGR in the range


def write_report(lake: Lake, start: datetime, end: datetime, out: Path) -> int:
    """Plot GGR (EUR) and active players per window for the sites with the highest GGR in the
    range; returns the number of points drawn."""
    rows = (
        lake.connect()
        .execute(
            """
            WITH ranked AS (
                SELECT coalesce(site_name, site_id) AS site, sum(ggr_eur) AS total
                FROM site_window_stats WHERE window_start >= $1 AND window_start < $2
                GROUP BY ALL ORDER BY total DESC LIMIT $3
            )
            SELECT window_start, r.site, sum(ggr_eur)::DOUBLE AS ggr,
                   sum(active_players) AS players
            FROM site_window_stats s
            JOIN ranked r ON coalesce(s.site_name, s.site_id) = r.site
            WHERE window_start >= $1 AND window_start < $2
            GROUP BY ALL ORDER BY window_start
            """,
            [start, end, TOP_SITES],
        )
        .fetchall()
    )
    if not rows:
        raise BetlakeError(f"no figures in site_window_stats for [{start}, {end})")
    series: dict[str, list[tuple]] = {}
    for window, site, ggr, players in rows:
        series.setdefault(site, []).append((window, ggr, players))
    figure = Figure(figsize=(13, 8))
    ggr_axis, players_axis = figure.subplots(2, 1, sharex=True)
    for site, points in sorted(series.items()):
        windows = [p[0] for p in points]
        ggr_axis.plot(windows, [p[1] for p in points], label=site, linewidth=1)
        players_axis.plot(windows, [p[2] for p in points], label=site, linewidth=1)
    ggr_axis.set_ylabel("GGR (EUR) per window")
    players_axis.set_ylabel("active players per window")
    ggr_axis.axhline(0, color="grey", linewidth=0.5)
    ggr_axis.legend(loc="upper left", fontsize="small", ncol=3)
    figure.suptitle(
        f"betlake: per-site figures, {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    )
    figure.autofmt_xdate()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110, bbox_inches="tight")
    return len(rows)
