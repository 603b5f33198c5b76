"""One Feast source per snapshot table, named `<table>_source`; the profile picks the backend."""

from feast import FileSource
from feast.data_format import ParquetFormat
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)

from streamflow.domain.features import TIMESTAMP
from streamflow.domain.seeds import TABLES
from streamflow.settings import get_settings


def snapshot_source(table: str) -> FileSource | PostgreSQLSource:
    """The snapshot table as the active profile stores it: parquet files, or a Postgres table."""
    settings = get_settings()
    name = f"{table}_source"
    if settings.uses_postgres:
        return PostgreSQLSource(name=name, table=table, timestamp_field=TIMESTAMP)
    # One parquet file per as_of (adapters/snapshots.py); the glob skips the store's hidden staging
    # files, and DuckDB reads the files it matches as one table, streaming.
    return FileSource(
        name=name,
        path=str(settings.snapshots_dir / table / "*.parquet"),
        file_format=ParquetFormat(),
        timestamp_field=TIMESTAMP,
    )


sources = {table.snapshot: snapshot_source(table.snapshot) for table in TABLES}
users_snapshots_source = sources["users_snapshots"]
subscriptions_profile_snapshots_source = sources["subscriptions_profile_snapshots"]
usage_agg_30d_snapshots_source = sources["usage_agg_30d_snapshots"]
payments_agg_90d_snapshots_source = sources["payments_agg_90d_snapshots"]
support_agg_90d_snapshots_source = sources["support_agg_90d_snapshots"]
labels_snapshots_source = sources["labels_snapshots"]
