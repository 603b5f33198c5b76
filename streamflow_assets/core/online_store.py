"""Feast online stores that never let an older snapshot overwrite a newer one.

Feast's SQLite and Postgres online stores upsert blindly, so re-materializing an old month (a
backfill) would roll every user back to that month. These subclasses keep Feast's tables and
read path and change only the write: a row is replaced when its event time is not older than
the stored one. `write_encoded` also reports what it did, for the `online_features` asset.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from feast.feature_view import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id
from feast.infra.online_stores.postgres_online_store.postgres import (
    PostgreSQLOnlineStore,
    PostgreSQLOnlineStoreConfig,
)
from feast.infra.online_stores.sqlite import (
    SqliteOnlineStore,
    SqliteOnlineStoreConfig,
    adapt_datetime_epoch,
    convert_timestamp,
)

# Private, kept on purpose (Feast 0.67.0): the one function that opens a connection with the
# online store config's own settings (sslmode, keepalives, timeouts); Feast has no public one.
from feast.infra.utils.postgres.connection_utils import _get_conn
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.utils import to_naive_utc
from psycopg import Connection, sql

WriteBatch = Sequence[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]]
# (entity_key, feature_name, serialized value, event_ts, created_ts)
Row = tuple[bytes, str, bytes, Any, Any]


def _quote_id(identifier: str) -> str:
    """A SQL identifier in double quotes, embedded quotes doubled (as Feast's stores quote)."""
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class WriteStats:
    """Entities offered to the online store, and how many it took."""

    offered: int
    written: int

    @property
    def skipped_as_older(self) -> int:
        return self.offered - self.written


def _table(config: RepoConfig, view: FeatureView) -> str:
    return compute_table_id(
        config.project, view, config.registry.enable_online_feature_view_versioning
    )


class _Monotonic:
    """The write path both stores share; each backend supplies `_upsert` and its time format."""

    def _timestamp(self, moment: datetime) -> Any:
        raise NotImplementedError

    def _upsert(self, config: RepoConfig, view: FeatureView, rows: list[Row]) -> int:
        """Write rows whose event time is not older than the stored one; rows changed."""
        raise NotImplementedError

    def _stats(self, changed: int, rows: int, entities: int) -> WriteStats:
        # Every feature of an entity carries the same event time: all are replaced or none.
        per_entity = max(1, rows // max(1, entities))
        return WriteStats(offered=entities, written=changed // per_entity)

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: WriteBatch,
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Feast's own write (`feast materialize`, `write_to_online_store`), guarded."""
        version = config.entity_key_serialization_version
        rows = [
            (
                serialize_entity_key(key, entity_key_serialization_version=version),
                feature,
                value.SerializeToString(),
                self._timestamp(event_ts),
                self._timestamp(created_ts) if created_ts else None,
            )
            for key, values, event_ts, created_ts in data
            for feature, value in values.items()
        ]
        if rows:
            self._upsert(config, table, rows)
        if progress:
            progress(len(data))

    def write_encoded(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: Sequence[bytes],
        values: dict[str, Sequence[bytes]],
        event_ts: datetime,
    ) -> WriteStats:
        """Write already-serialized keys and values that share one event time (a snapshot)."""
        event, created = self._timestamp(event_ts), self._timestamp(datetime.now(UTC))
        names = sorted(values)
        columns = [values[name] for name in names]
        rows = [
            (key, name, value, event, created)
            for key, *row in zip(entity_keys, *columns, strict=True)
            for name, value in zip(names, row, strict=True)
        ]
        return self._stats(self._upsert(config, table, rows), len(rows), len(entity_keys))


class MonotonicSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    type: Literal["streamflow_assets.core.online_store.MonotonicSqliteOnlineStore"] = (  # type: ignore[assignment]
        "streamflow_assets.core.online_store.MonotonicSqliteOnlineStore"
    )


class MonotonicSqliteOnlineStore(_Monotonic, SqliteOnlineStore):
    """Local profile: SQLite, with an upsert that keeps the newer of stored and offered rows."""

    def _timestamp(self, moment: datetime) -> int:
        # Stored as Feast's sqlite adapter stores datetimes (epoch seconds of the naive UTC time).
        return adapt_datetime_epoch(to_naive_utc(moment))

    def _upsert(self, config: RepoConfig, view: FeatureView, rows: list[Row]) -> int:
        # value_text is left empty: only Feast's document-search filters read it.
        upsert = (
            f"INSERT INTO {_quote_id(_table(config, view))} AS stored "
            "(entity_key, feature_name, value, event_ts, created_ts) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
            "event_ts = excluded.event_ts, created_ts = excluded.created_ts "
            "WHERE excluded.event_ts >= stored.event_ts"
        )
        conn = self._get_conn(config)
        with conn:
            return conn.executemany(upsert, rows).rowcount

    def newest_event_time(self, config: RepoConfig, view: FeatureView) -> datetime | None:
        """The newest event time any entity of a feature view holds online."""
        query = f"SELECT max(event_ts) FROM {_quote_id(_table(config, view))}"
        (newest,) = self._get_conn(config).execute(query).fetchone()
        # Read back as Feast's own read path does (its converter, then UTC).
        return convert_timestamp(str(newest).encode()).replace(tzinfo=UTC) if newest else None


class MonotonicPostgreSQLOnlineStoreConfig(PostgreSQLOnlineStoreConfig):
    type: Literal["streamflow_assets.core.online_store.MonotonicPostgreSQLOnlineStore"] = (  # type: ignore[assignment]
        "streamflow_assets.core.online_store.MonotonicPostgreSQLOnlineStore"
    )


class MonotonicPostgreSQLOnlineStore(_Monotonic, PostgreSQLOnlineStore):
    """Postgres profile: rows are copied into a temporary table, then merged with the guard."""

    @contextlib.contextmanager
    def _get_conn(self, config: RepoConfig, autocommit: bool = False) -> Iterator[Connection]:
        # Feast's version asserts the store type is literally "postgres"; one connection per
        # store object is what its singleton mode does too.
        if not self._conn:
            self._conn = _get_conn(config.online_store)
        self._conn.set_autocommit(autocommit)
        yield self._conn

    def _timestamp(self, moment: datetime) -> datetime:
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def _upsert(self, config: RepoConfig, view: FeatureView, rows: list[Row]) -> int:
        target = sql.Identifier(_table(config, view))
        columns = sql.SQL("entity_key, feature_name, value, event_ts, created_ts")
        with self._get_conn(config) as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "CREATE TEMP TABLE incoming ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA"
                ).format(columns, target)
            )
            with cur.copy(sql.SQL("COPY incoming ({}) FROM STDIN").format(columns)) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(
                sql.SQL(
                    "INSERT INTO {target} AS stored ({columns}) SELECT {columns} FROM incoming "
                    "ON CONFLICT (entity_key, feature_name) DO UPDATE SET "
                    "value = EXCLUDED.value, event_ts = EXCLUDED.event_ts, "
                    "created_ts = EXCLUDED.created_ts "
                    "WHERE EXCLUDED.event_ts >= stored.event_ts"
                ).format(target=target, columns=columns)
            )
            return cur.rowcount

    def newest_event_time(self, config: RepoConfig, view: FeatureView) -> datetime | None:
        query = sql.SQL("SELECT max(event_ts) FROM {}").format(sql.Identifier(_table(config, view)))
        with self._get_conn(config, autocommit=True) as conn:
            (newest,) = conn.execute(query).fetchone()
        return newest
