"""The seeds directory: one `month_NNN/` folder of six CSVs per monthly partition."""

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from dagster import ConfigurableResource

from streamflow_assets.core import months, seeds


class SeedsResource(ConfigurableResource):
    """Reads and validates a month of seed CSVs."""

    seeds_dir: str

    def folder(self, partition_key: str) -> Path:
        return Path(self.seeds_dir) / months.folder_name(partition_key)

    def months(self) -> list[str]:
        return months.seeded_months(Path(self.seeds_dir))

    def version(self, partition_key: str) -> int:
        """Changes whenever a file of the month's folder is added, removed or rewritten."""
        folder = self.folder(partition_key)
        return max((f.stat().st_mtime_ns for f in folder.iterdir()), default=0)

    def iter_month(self, partition_key: str) -> Iterator[tuple[str, pd.DataFrame]]:
        """The month's validated tables one at a time (`core.seeds.iter_month`)."""
        return seeds.iter_month(self.folder(partition_key))
