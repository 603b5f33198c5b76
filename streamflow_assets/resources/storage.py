"""Snapshot storage resources: the same `SnapshotStore` interface on every profile."""

from pathlib import Path

from dagster import ConfigurableResource
from psycopg import conninfo

from streamflow.adapters.snapshots import (
    ParquetSnapshotStore,
    PostgresSnapshotStore,
    SnapshotStore,
)


class SnapshotsResource(ConfigurableResource):
    """Where snapshot and training tables are stored; subclasses bind one backend."""

    def store(self) -> SnapshotStore:
        raise NotImplementedError


class ParquetSnapshots(SnapshotsResource):
    """Local profile: parquet files per table and as_of under the data dir."""

    root: str

    def store(self) -> SnapshotStore:
        return ParquetSnapshotStore(Path(self.root))


class PostgresDatabase(ConfigurableResource):
    """The profile's PostgreSQL database, for the resources that keep their data in it."""

    host: str
    port: int
    user: str
    # An EnvVar when set, so that the Dagster UI shows the variable's name, not the secret.
    password: str
    database: str

    def dsn(self) -> str:
        return conninfo.make_conninfo(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.database,
        )


class PostgresSnapshots(SnapshotsResource, PostgresDatabase):
    """Postgres profile: a table per snapshot, a month replaced in one transaction."""

    def store(self) -> SnapshotStore:
        return PostgresSnapshotStore(self.dsn())
