"""Snapshot storage resources: the same `SnapshotStore` interface on every profile."""

from pathlib import Path

from dagster import ConfigurableResource

from streamflow_assets.core.snapshots import ParquetSnapshotStore, SnapshotStore


class SnapshotsResource(ConfigurableResource):
    """Where snapshot and training tables are stored; subclasses bind one backend."""

    def store(self) -> SnapshotStore:
        raise NotImplementedError


class ParquetSnapshots(SnapshotsResource):
    """Local profile: parquet files per table and as_of under the data dir."""

    root: str

    def store(self) -> SnapshotStore:
        return ParquetSnapshotStore(Path(self.root))
