"""Feast online stores that never let an older snapshot overwrite a newer one.

Feast's SQLite and Postgres online stores upsert blindly, so re-materializing an old month (a
backfill) would roll every user back to that month. These subclasses keep Feast's tables and
read path and change only the write: a row is replaced when its event time is not older than
the stored one. They also count what each write did, which the `online_features` asset reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from feast.feature_view import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.sqlite import (
    SqliteOnlineStore,
    SqliteOnlineStoreConfig,
    _quote_id,
    _table_id,
    adapt_datetime_epoch,
    convert_timestamp,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.utils import to_naive_utc

WriteBatch = Sequence[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]]


@dataclass
class WriteStats:
    """Entities offered to the online store, and how many it took."""

    offered: int = 0
    written: int = 0

    @property
    def skipped_as_older(self) -> int:
        return self.offered - self.written


class MonotonicSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    type: Literal["streamflow_assets.core.online_store.MonotonicSqliteOnlineStore"] = (  # type: ignore[assignment]
        "streamflow_assets.core.online_store.MonotonicSqliteOnlineStore"
    )


class MonotonicSqliteOnlineStore(SqliteOnlineStore):
    """SQLite online store whose upsert keeps the newer of the stored and the offered row."""

    def __init__(self) -> None:
        super().__init__()
        self.stats: dict[str, WriteStats] = {}

    def _table_name(self, config: RepoConfig, table: FeatureView) -> str:
        versioning = config.registry.enable_online_feature_view_versioning
        return _quote_id(_table_id(config.project, table, versioning))

    def _upsert(
        self, config: RepoConfig, table: FeatureView, rows: list[tuple], entities: int
    ) -> WriteStats:
        """Insert or replace rows (entity_key, feature_name, value, event_ts, created_ts).

        value_text is left empty: only Feast's document-search filters read it.
        """
        upsert = (
            f"INSERT INTO {self._table_name(config, table)} AS stored "
            "(entity_key, feature_name, value, event_ts, created_ts) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
            "event_ts = excluded.event_ts, created_ts = excluded.created_ts "
            "WHERE excluded.event_ts >= stored.event_ts"
        )
        conn = self._get_conn(config)
        with conn:
            changed = conn.executemany(upsert, rows).rowcount
        # Every feature of an entity carries the same event time, so all or none are replaced.
        per_entity = max(1, len(rows) // max(1, entities))
        stats = self.stats.setdefault(table.name, WriteStats())
        stats.offered += entities
        stats.written += changed // per_entity
        return WriteStats(offered=entities, written=changed // per_entity)

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: WriteBatch,
        progress: Callable[[int], Any] | None,
    ) -> None:
        version = config.entity_key_serialization_version
        rows = []
        for entity_key, values, event_ts, created_ts in data:
            key = serialize_entity_key(entity_key, entity_key_serialization_version=version)
            event_ts = to_naive_utc(event_ts)
            created_ts = to_naive_utc(created_ts) if created_ts else None
            for feature, value in values.items():
                rows.append((key, feature, value.SerializeToString(), event_ts, created_ts))
        if rows:
            self._upsert(config, table, rows, len(data))
        if progress:
            progress(len(data))

    def write_encoded(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[bytes],
        values: dict[str, list[bytes]],
        event_ts: datetime,
    ) -> WriteStats:
        """Write already-serialized keys and values that share one event time (a snapshot)."""
        # Stored as Feast's sqlite adapter stores datetimes, converted once instead of per row.
        event = adapt_datetime_epoch(to_naive_utc(event_ts))
        created = adapt_datetime_epoch(to_naive_utc(datetime.now(UTC)))
        names = sorted(values)
        columns = [values[name] for name in names]
        rows = [
            (key, name, value, event, created)
            for key, *row in zip(entity_keys, *columns, strict=True)
            for name, value in zip(names, row, strict=True)
        ]
        return self._upsert(config, table, rows, len(entity_keys))

    def newest_event_time(self, config: RepoConfig, table: FeatureView) -> datetime | None:
        """The newest event time any entity of a feature view holds online."""
        sql = f"SELECT max(event_ts) FROM {self._table_name(config, table)}"
        (newest,) = self._get_conn(config).execute(sql).fetchone()
        # Read back as Feast's own read path does (its converter, then UTC).
        return convert_timestamp(str(newest).encode()).replace(tzinfo=UTC) if newest else None
