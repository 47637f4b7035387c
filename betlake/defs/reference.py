"""Reference assets: bet_sites, players and fx_rates loaded from the static CSV sources.

Each load checks the file before it replaces the table: a bad file fails the run loudly, shows
which check failed and on what, and leaves the last good table in place.
"""

from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg
import pyarrow as pa

from betlake.core.contract import BET_SITES, FX_RATES, PLAYERS, TableSpec
from betlake.core.reference import (
    bad_currency_codes,
    duplicate_keys,
    non_positive_rates,
    read_reference_csv,
    unknown_segments,
    unpriced_site_currencies,
)
from betlake.defs.resources import BetlakeResource

Check = tuple[str, str, Callable[[pa.Table], list[str]]]  # name, description, problems of a table


def _unique(spec: TableSpec) -> Check:
    return (
        f"unique_{'_'.join(spec.key)}",
        f"No two rows share a {', '.join(spec.key)}.",
        lambda table: duplicate_keys(table, spec.key),
    )


_CURRENCY_CODES: Check = (
    "known_currencies",
    "Currencies are ISO 4217 codes (three capitals).",
    bad_currency_codes,
)


CHECKS: dict[str, list[Check]] = {
    BET_SITES.name: [_unique(BET_SITES), _CURRENCY_CODES],
    PLAYERS.name: [
        _unique(PLAYERS),
        ("known_segments", "Segments are vip, regular or new.", unknown_segments),
    ],
    FX_RATES.name: [
        _unique(FX_RATES),
        _CURRENCY_CODES,
        ("positive_rates", "No rate is zero or negative.", non_positive_rates),
    ],
}


def _reference_asset(spec: TableSpec) -> dg.AssetsDefinition:
    checks = CHECKS[spec.name]

    @dg.asset(
        name=spec.name,
        group_name="reference",
        kinds={"delta", "csv"},
        description=f"The {spec.name} reference table, loaded from {spec.name}.csv.",
        check_specs=[
            dg.AssetCheckSpec(name, asset=spec.name, description=text, blocking=True)
            for name, text, _ in checks
        ],
    )
    def load(context: dg.AssetExecutionContext, betlake: BetlakeResource):
        settings = betlake.settings()
        table = read_reference_csv(spec, settings.reference, datetime.now(UTC))
        results = []
        for name, _, problems_of in checks:
            problems = problems_of(table)
            results.append(
                dg.AssetCheckResult(
                    check_name=name,
                    passed=not problems,
                    metadata={"problems": len(problems), "examples": ", ".join(problems[:10])},
                )
            )
        failed = [r.check_name for r in results if not r.passed]
        if failed:
            yield from results
            raise dg.Failure(
                f"{settings.reference / spec.name}.csv failed {', '.join(failed)}; "
                f"the {spec.name} table was left as it was",
            )
        betlake.lake().overwrite(spec, table)
        context.log.info("loaded %d rows into %s", table.num_rows, spec.name)
        yield dg.MaterializeResult(
            metadata={"rows": table.num_rows, "source": str(settings.reference)},
            check_results=results,
        )

    return load


reference_assets = [_reference_asset(spec) for spec in (BET_SITES, PLAYERS, FX_RATES)]


@dg.asset_check(
    asset=BET_SITES.name,
    additional_deps=[FX_RATES.name],
    description="Every site currency other than EUR has EUR rates (else its money is unpriced).",
)
def site_currencies_have_rates(betlake: BetlakeResource) -> dg.AssetCheckResult:
    lake = betlake.lake()
    missing = unpriced_site_currencies(lake.scan(BET_SITES), lake.scan(FX_RATES))
    return dg.AssetCheckResult(
        passed=not missing, metadata={"currencies_without_rates": ", ".join(missing)}
    )
