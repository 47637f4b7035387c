"""The resource every betlake asset uses: settings from the environment and the lake."""

import os

import dagster as dg

from betlake.config import Settings
from betlake.lake import Lake


class BetlakeResource(dg.ConfigurableResource):
    """betlake's settings (``BETLAKE_*`` environment) and the lake they point at."""

    lake_root: str | None = None  # overrides BETLAKE_LAKE (tests, another environment)

    def settings(self) -> Settings:
        env = dict(os.environ)
        if self.lake_root is not None:
            env["BETLAKE_LAKE"] = self.lake_root
        return Settings.from_env(env)

    def lake(self) -> Lake:
        return Lake(self.settings().lake)
