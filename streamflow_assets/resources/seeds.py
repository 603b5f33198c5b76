"""The seeds directory: one `month_NNN/` folder of six CSVs per monthly partition."""

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from dagster import ConfigurableResource

from streamflow.domain import months, seeds


class SeedsUnreadable(FileNotFoundError):
    """The process running a step cannot read the run's seeds location (on a cluster: a worker
    whose host does not share it at that path)."""


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

    def iter_month(
        self, partition_key: str, rows: int
    ) -> Iterator[tuple[str, Iterator[pd.DataFrame]]]:
        """The month's validated tables one at a time, each in chunks of at most `rows`
        (`domain.seeds.iter_month`)."""
        self._check_readable(self.folder(partition_key))
        return seeds.iter_month(self.folder(partition_key), rows)

    def _check_readable(self, folder: Path) -> None:
        # Checked where the step runs, which on the cluster profile is any worker's host.
        root = Path(self.seeds_dir)
        if not os.access(root, os.R_OK | os.X_OK) or not root.is_dir():
            problem = f"the seeds location {root} is not a readable directory"
        elif not folder.is_dir():
            problem = f"no seeds folder for this month: looked for {folder}"
        else:
            return
        raise SeedsUnreadable(
            f"{problem} on host {socket.gethostname()} (pid {os.getpid()}); every process that "
            "runs steps must read the run's seeds location at this path"
        )
