"""The reference snapshot long-running workers use follows new versions of the Delta tables."""

from __future__ import annotations

from datetime import UTC, datetime

from betlake.core.contract import BET_SITES
from betlake.core.lake import Lake
from betlake.core.reference import ReferenceCache, read_reference_csv
from tests.conftest import write_reference_csv


def site_names(cache: ReferenceCache) -> dict[str, str]:
    sites = cache.get().sites
    return dict(zip(sites.column("site_id").to_pylist(), sites.column("name").to_pylist(),
                    strict=True))  # fmt: skip


def rename_gb_site(settings, lake: Lake, name: str) -> None:
    """A new version of bet_sites in which s-gb is called ``name``."""
    write_reference_csv(
        settings.reference,
        bet_sites=f"site_id,name,brand,country,currency,timezone\n"
        f"s-gb,{name},Brand One,GB,GBP,Europe/London\n",
    )
    lake.overwrite(BET_SITES, read_reference_csv(BET_SITES, settings.reference, datetime.now(UTC)))


def test_cache_reloads_when_a_reference_table_gets_a_new_version(settings, loaded_lake: Lake):
    cache = ReferenceCache(Lake.of(settings), refresh_seconds=0)
    assert site_names(cache)["s-gb"] == "GB Site"
    first = cache.get()
    assert cache.get() is first  # no new version: the same snapshot, nothing re-read

    rename_gb_site(settings, loaded_lake, "GB Site Renamed")

    assert site_names(cache) == {"s-gb": "GB Site Renamed"}


def test_cache_does_not_look_again_within_its_refresh_interval(settings, loaded_lake: Lake):
    cache = ReferenceCache(Lake.of(settings), refresh_seconds=3600)
    before = site_names(cache)
    rename_gb_site(settings, loaded_lake, "Other")
    assert site_names(cache) == before
