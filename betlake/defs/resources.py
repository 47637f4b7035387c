"""The resource every betlake asset uses: settings from the environment and the lake."""

import dagster as dg

from betlake.core.config import Settings
from betlake.core.lake import Lake


class BetlakeResource(dg.ConfigurableResource):
    """betlake's settings (``BETLAKE_*`` environment, read when a run uses them) and the lake
    they point at."""

    lake_root: str | None = None  # overrides BETLAKE_LAKE (tests, another environment)

    def settings(self) -> Settings:
        settings = Settings.from_env()
        return settings if self.lake_root is None else settings.with_lake(self.lake_root)

    def lake(self) -> Lake:
        return Lake.of(self.settings())
