"""Feast online stores that never let an older snapshot overwrite a newer one.

Feast's SQLite and Postgres online stores upsert blindly, so re-materializing an old month (a
backfill) would roll every user back to that month. These subclasses keep Feast's tables and
read path and change only the write: a row is replaced when its event time is not older than
the stored one. `write_encoded` writes a month's views in one transaction (a crash or a lost
connection leaves the month online whole or not at all) and reports what it did, for the
`online_features` asset. Feast's Redis store compares event times itself, but reads them and
writes in two round trips (two concurrent backfills can still roll a user back) and skips an
equal time (a re-run of a month could not correct it): its subclass compares and writes in one
server-side script.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from feast.entity import Entity
from feast.feature_view import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.postgres_online_store.postgres import (
    PostgreSQLOnlineStore,
    PostgreSQLOnlineStoreConfig,
)
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import (
    SqliteOnlineStore,
    SqliteOnlineStoreConfig,
    adapt_datetime_epoch,
    convert_timestamp,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.utils import make_tzaware, to_naive_utc
from google.protobuf.timestamp_pb2 import Timestamp
from psycopg import Connection, Cursor, sql

from streamflow.adapters import feast_layout
from streamflow.adapters.feast_layout import quote_id, redis_field, redis_view_name, table_name

WriteBatch = Sequence[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]]
# One entity's row of a view: (entity_key, event_ts, created_ts, then a serialized value per
# feature name, None for a feature not offered). One row an entity, not one a feature: the
# PostgreSQL store stages a month with one COPY row per user.
Row = tuple[Any, ...]


@dataclass(frozen=True)
class WriteStats:
    """Entities offered to the online store, and how many it took."""

    offered: int
    written: int

    @property
    def skipped_as_older(self) -> int:
        return self.offered - self.written

    def __add__(self, other: WriteStats) -> WriteStats:
        """Two chunks of a view's write, counted as one."""
        return WriteStats(self.offered + other.offered, self.written + other.written)


# A view's counts before its first chunk.
_NOTHING = WriteStats(offered=0, written=0)


@dataclass(frozen=True)
class EncodedView:
    """One feature view's rows of a snapshot: serialized entity keys, and values per feature."""

    view: FeatureView
    entity_keys: Sequence[bytes]
    values: dict[str, Sequence[bytes]]


class _Monotonic:
    """The write path both stores share; each backend supplies a transaction, `_upsert` and its
    time format."""

    def _timestamp(self, moment: datetime) -> Any:
        raise NotImplementedError

    def _transaction(self, config: RepoConfig) -> contextlib.AbstractContextManager[Any]:
        """One transaction on the store's connection; yields the handle `_upsert` writes to."""
        raise NotImplementedError

    def _upsert(
        self,
        handle: Any,
        config: RepoConfig,
        view: FeatureView,
        names: Sequence[str],
        rows: Iterable[Row],
    ) -> int:
        """Write the values whose event time is not older than the stored one; returns how
        many were not older (a store may skip writing a value it already holds)."""
        raise NotImplementedError

    def _stats(self, accepted: int, values: int, entities: int) -> WriteStats:
        # Every feature of an entity carries the same event time: all are replaced or none.
        per_entity = max(1, values // max(1, entities))
        return WriteStats(offered=entities, written=accepted // per_entity)

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: WriteBatch,
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Feast's own write (`feast materialize`, `write_to_online_store`), guarded."""
        version = config.entity_key_serialization_version
        names = sorted({name for _, values, _, _ in data for name in values})
        rows = [
            (
                serialize_entity_key(key, entity_key_serialization_version=version),
                self._timestamp(event_ts),
                self._timestamp(created_ts) if created_ts else None,
                *(values[name].SerializeToString() if name in values else None for name in names),
            )
            for key, values, event_ts, created_ts in data
        ]
        if rows:
            with self._transaction(config) as handle:
                self._upsert(handle, config, table, names, rows)
        if progress:
            progress(len(data))

    def write_encoded(
        self, config: RepoConfig, views: Iterable[EncodedView], event_ts: datetime
    ) -> dict[str, WriteStats]:
        """Write a snapshot's views, already serialized and sharing one event time, in one
        transaction; `views` may be a generator, so that one view at a time is in memory."""
        event, created = self._timestamp(event_ts), self._timestamp(datetime.now(UTC))
        stats = {}
        with self._transaction(config) as handle:
            for encoded in views:
                names = sorted(encoded.values)
                columns = [encoded.values[name] for name in names]
                # A generator, not a list: the backends stream it (executemany, COPY), so a
                # month of a million users never exists as millions of row tuples at once.
                rows = (
                    (key, event, created, *values)
                    for key, *values in zip(encoded.entity_keys, *columns, strict=True)
                )
                accepted = self._upsert(handle, config, encoded.view, names, rows)
                entities = len(encoded.entity_keys)
                written = self._stats(accepted, entities * len(names), entities)
                stats[encoded.view.name] = stats.get(encoded.view.name, _NOTHING) + written
        return stats


class MonotonicSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    type: Literal["streamflow.adapters.online_store.MonotonicSqliteOnlineStore"] = (  # type: ignore[assignment]
        "streamflow.adapters.online_store.MonotonicSqliteOnlineStore"
    )


class MonotonicSqliteOnlineStore(_Monotonic, SqliteOnlineStore):
    """Local profile: SQLite, with an upsert that keeps the newer of stored and offered rows."""

    def _timestamp(self, moment: datetime) -> int:
        # Stored as Feast's sqlite adapter stores datetimes (epoch seconds of the naive UTC time).
        return adapt_datetime_epoch(to_naive_utc(moment))

    @contextlib.contextmanager
    def _transaction(self, config: RepoConfig) -> Iterator[sqlite3.Connection]:
        # sqlite3 opens a transaction at the first write and `with` commits or rolls it back.
        conn = self._get_conn(config)
        with conn:
            yield conn

    def _upsert(
        self,
        handle: sqlite3.Connection,
        config: RepoConfig,
        view: FeatureView,
        names: Sequence[str],
        rows: Iterable[Row],
    ) -> int:
        # value_text is left empty: only Feast's document-search filters read it.
        upsert = (
            f"INSERT INTO {quote_id(table_name(config, view))} AS stored "
            "(entity_key, feature_name, value, event_ts, created_ts) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
            "event_ts = excluded.event_ts, created_ts = excluded.created_ts "
            "WHERE excluded.event_ts >= stored.event_ts"
        )
        values = (
            (key, name, value, event, created)
            for key, event, created, *row in rows
            for name, value in zip(names, row, strict=True)
            if value is not None
        )
        # SQLite rewrites an equal row too: every value not older is a row changed.
        return handle.executemany(upsert, values).rowcount

    def newest_event_time(self, config: RepoConfig, view: FeatureView) -> datetime | None:
        """The newest event time any entity of a feature view holds online."""
        query = f"SELECT max(event_ts) FROM {quote_id(table_name(config, view))}"
        (newest,) = self._get_conn(config).execute(query).fetchone()
        # Read back as Feast's own read path does (its converter, then UTC).
        return convert_timestamp(str(newest).encode()).replace(tzinfo=UTC) if newest else None


# Percent of a page that inserts fill: the rest takes the next month's versions of its rows.
_FILLFACTOR = 45


class MonotonicPostgreSQLOnlineStoreConfig(PostgreSQLOnlineStoreConfig):
    type: Literal["streamflow.adapters.online_store.MonotonicPostgreSQLOnlineStore"] = (  # type: ignore[assignment]
        "streamflow.adapters.online_store.MonotonicPostgreSQLOnlineStore"
    )


class MonotonicPostgreSQLOnlineStore(_Monotonic, PostgreSQLOnlineStore):
    """Postgres profile: a view's rows are copied into a temporary table (one binary COPY row per
    entity), then merged in one guarded statement that skips values already stored.

    A month rewrites every row of Feast's tables. Left to itself that doubles them (the old
    versions stay as dead tuples until a VACUUM, and every index gets a new entry). So the
    tables keep free room on each page (fillfactor): the update of a row lands on its own page
    and leaves the indexes alone (a HOT update), and the next month's update of that page
    prunes the versions the month before left dead, with no VACUUM (which this server, with
    autovacuum off, would never run). A re-run of a month writes no new row version at all.
    """

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        """Feast's tables, each with room on its pages for the next month's row versions."""
        super().update(
            config, tables_to_delete, tables_to_keep, entities_to_delete, entities_to_keep, partial
        )
        with self._get_conn(config, autocommit=True) as conn:
            for view in tables_to_keep:
                conn.execute(
                    sql.SQL("ALTER TABLE {} SET (fillfactor = {})").format(
                        sql.Identifier(table_name(config, view)), sql.Literal(_FILLFACTOR)
                    )
                )

    @contextlib.contextmanager
    def _get_conn(self, config: RepoConfig, autocommit: bool = False) -> Iterator[Connection]:
        # Feast's version asserts the store type is literally "postgres"; one connection per
        # store object is what its singleton mode does too.
        # A connection the server or network dropped stays closed: open a new one, so that a
        # reader recovers from an outage without a restart.
        if self._conn is None or self._conn.closed:
            self._conn = feast_layout.connect(config.online_store)
        self._conn.set_autocommit(autocommit)
        yield self._conn

    def _timestamp(self, moment: datetime) -> datetime:
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    @contextlib.contextmanager
    def _transaction(self, config: RepoConfig) -> Iterator[Cursor]:
        with self._get_conn(config) as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    def _upsert(
        self,
        handle: Cursor,
        config: RepoConfig,
        view: FeatureView,
        names: Sequence[str],
        rows: Iterable[Row],
    ) -> int:
        target = sql.Identifier(table_name(config, view))
        columns = [sql.Identifier(f"value_{index}") for index in range(len(names))]
        # Dropped after the merge, not at commit: the next view of the month, in the same
        # transaction, stages its rows under the same name.
        handle.execute(
            sql.SQL(
                "CREATE TEMP TABLE incoming (entity_key bytea, event_ts timestamptz, "
                "created_ts timestamptz, {})"
            ).format(sql.SQL(", ").join(sql.SQL("{} bytea").format(c) for c in columns))
        )
        offered = 0
        with handle.copy("COPY incoming FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["bytea", "timestamptz", "timestamptz", *["bytea"] * len(names)])
            for row in rows:
                copy.write_row(row)
                offered += len(names) - row[3:].count(None)
        # The staged rows as Feast's table holds them: one per entity and feature offered.
        values = sql.SQL(
            "FROM incoming CROSS JOIN LATERAL (VALUES {}) AS offered (feature_name, value) "
            "WHERE offered.value IS NOT NULL"
        ).format(
            sql.SQL(", ").join(
                sql.SQL("({}, {})").format(sql.Literal(name), column)
                for name, column in zip(names, columns, strict=True)
            )
        )
        handle.execute(
            sql.SQL(
                "INSERT INTO {target} AS stored "
                "(entity_key, feature_name, value, event_ts, created_ts) "
                "SELECT entity_key, feature_name, value, event_ts, created_ts {values} "
                "ON CONFLICT (entity_key, feature_name) DO UPDATE SET "
                "value = EXCLUDED.value, event_ts = EXCLUDED.event_ts, "
                "created_ts = EXCLUDED.created_ts "
                # Newer replaces; equal replaces only a different value (a corrected re-run),
                # so that a plain re-run writes nothing.
                "WHERE EXCLUDED.event_ts > stored.event_ts OR (EXCLUDED.event_ts = "
                "stored.event_ts AND EXCLUDED.value IS DISTINCT FROM stored.value)"
            ).format(target=target, values=values)
        )
        changed, older = handle.rowcount, 0
        if changed < offered:
            # Values left as they were are older or already stored: count the older ones. The
            # merge locked every row it met, so no one else has changed them since.
            handle.execute(
                sql.SQL(
                    "SELECT count(*) {values} AND EXISTS (SELECT FROM {target} AS stored "
                    "WHERE stored.entity_key = incoming.entity_key AND "
                    "stored.feature_name = offered.feature_name AND "
                    "stored.event_ts > incoming.event_ts)"
                ).format(target=target, values=values)
            )
            (older,) = handle.fetchone()
        handle.execute("DROP TABLE incoming")
        return offered - older

    def newest_event_time(self, config: RepoConfig, view: FeatureView) -> datetime | None:
        query = sql.SQL("SELECT max(event_ts) FROM {}").format(
            sql.Identifier(table_name(config, view))
        )
        with self._get_conn(config, autocommit=True) as conn:
            (newest,) = conn.execute(query).fetchone()
        return newest


# Per entity hash: replace the view's fields when the offered event time is not older than the
# stored one (both are Feast's serialized protobuf Timestamps, decoded here), all in one atomic
# step, and keep the view's newest event time in one key beside the data (Redis has no max()).
# KEYS: n entity hashes, then the newest-time key. ARGV: the view's timestamp field, the offered
# Timestamp, its seconds and nanos, the feature count m, m feature fields, n*m values.
_GUARDED_WRITE = """
local function decode(bytes)
  local seconds, nanos, i = 0, 0, 1
  while i <= #bytes do
    local tag = string.byte(bytes, i)
    i = i + 1
    local value, scale, byte = 0, 1, 128
    while byte >= 128 do
      byte = string.byte(bytes, i)
      i = i + 1
      value = value + (byte % 128) * scale
      scale = scale * 128
    end
    if tag == 8 then seconds = value elseif tag == 16 then nanos = value end
  end
  return seconds, nanos
end
local function not_older(stored)
  if not stored then return true end
  local s, ns = decode(stored)
  local seconds, nanos = tonumber(ARGV[3]), tonumber(ARGV[4])
  return seconds > s or (seconds == s and nanos >= ns)
end
local m = tonumber(ARGV[5])
local n = #KEYS - 1
local written = 0
for k = 1, n do
  if not_older(redis.call('HGET', KEYS[k], ARGV[1])) then
    local fields = {ARGV[1], ARGV[2]}
    local base = 5 + m * k
    for f = 1, m do
      fields[#fields + 1] = ARGV[5 + f]
      fields[#fields + 1] = ARGV[base + f]
    end
    redis.call('HSET', KEYS[k], unpack(fields))
    written = written + 1
  end
end
if written > 0 and not_older(redis.call('GET', KEYS[n + 1])) then
  redis.call('SET', KEYS[n + 1], ARGV[2])
end
return written
"""
# Entities per script call: small enough that one call holds the (shared) server for about a
# millisecond. Calls per pipeline: a round trip is paid once per this many calls (measured with
# `bench/online_write.py --redis-batches`: it pays for small calls; at 500 a call the script is
# the cost; bench/reports/online_write.md).
_REDIS_CHUNK = 500
_REDIS_PIPELINE = 16


class MonotonicRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    type: Literal["streamflow.adapters.online_store.MonotonicRedisOnlineStore"] = (  # type: ignore[assignment]
        "streamflow.adapters.online_store.MonotonicRedisOnlineStore"
    )


class MonotonicRedisOnlineStore(RedisOnlineStore):
    """Cluster profile: Feast's Redis layout and read path, the guarded write in one script."""

    def _write(
        self,
        config: RepoConfig,
        view: FeatureView,
        entity_keys: Sequence[bytes],
        values: dict[str, Sequence[bytes]],
        event_ts: datetime,
    ) -> int:
        client = self._get_client(config.online_store)
        script = client.register_script(_GUARDED_WRITE)
        name = redis_view_name(config, view)
        project = config.project.encode()
        stamp = Timestamp()
        stamp.FromDatetime(make_tzaware(event_ts))
        features = sorted(values)
        head = [
            f"_ts:{name}",
            stamp.SerializeToString(),
            stamp.seconds,
            stamp.nanos,
            len(features),
            *(redis_field(name, feature) for feature in features),
        ]
        newest = newest_key(config, view)
        columns = [values[feature] for feature in features]
        written = 0
        # Not a MULTI transaction: each call stays atomic on its own, as without the pipeline.
        pipe = client.pipeline(transaction=False)
        for start in range(0, len(entity_keys), _REDIS_CHUNK):
            chunk = slice(start, start + _REDIS_CHUNK)
            keys = [key + project for key in entity_keys[chunk]]
            rows = zip(*(column[chunk] for column in columns), strict=True)
            cells = [value for row in rows for value in row]
            script(keys=[*keys, newest], args=[*head, *cells], client=pipe)
            if len(pipe) >= _REDIS_PIPELINE:
                written += sum(pipe.execute())
        return written + sum(pipe.execute())

    def write_encoded(
        self, config: RepoConfig, views: Iterable[EncodedView], event_ts: datetime
    ) -> dict[str, WriteStats]:
        """Write a snapshot's views, already serialized and sharing one event time.

        Redis has no transaction over a month: each user's view is replaced atomically (one
        script), so a crash leaves some users at the new month and none rolled back, and the
        re-run completes the month.
        """
        stats: dict[str, WriteStats] = {}
        for encoded in views:
            written = WriteStats(
                offered=len(encoded.entity_keys),
                written=self._write(
                    config, encoded.view, encoded.entity_keys, encoded.values, event_ts
                ),
            )
            stats[encoded.view.name] = stats.get(encoded.view.name, _NOTHING) + written
        return stats

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: WriteBatch,
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Feast's own write (`feast materialize`, `write_to_online_store`), guarded alike."""
        version = config.entity_key_serialization_version
        by_time: dict[datetime, list[tuple[bytes, dict[str, ValueProto]]]] = {}
        for key, row, event_ts, _ in data:
            serialized = serialize_entity_key(key, entity_key_serialization_version=version)
            by_time.setdefault(event_ts, []).append((serialized, row))
        for event_ts, rows in by_time.items():
            names = sorted({name for _, row in rows for name in row})
            values = {
                name: [row[name].SerializeToString() if name in row else b"" for _, row in rows]
                for name in names
            }
            self._write(config, table, [key for key, _ in rows], values, event_ts)
        if progress:
            progress(len(data))

    def newest_event_time(self, config: RepoConfig, view: FeatureView) -> datetime | None:
        stored = self._get_client(config.online_store).get(newest_key(config, view))
        if stored is None:
            return None
        stamp = Timestamp()
        stamp.ParseFromString(stored)
        return stamp.ToDatetime(tzinfo=UTC)


def newest_key(config: RepoConfig, view: FeatureView) -> bytes:
    """The Redis key holding a view's newest event time (entity keys never start with `_`)."""
    return f"_streamflow_newest:{config.project}:{redis_view_name(config, view)}".encode()
