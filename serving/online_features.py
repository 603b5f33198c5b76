"""Online features of users, read from Feast's online store as Feast's SDK returns them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
from feast import FeatureStore
from feast.infra.online_stores.postgres_online_store.postgres import PostgreSQLOnlineStore
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.infra.online_stores.sqlite import SqliteOnlineStore, convert_timestamp
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type
from google.protobuf.timestamp_pb2 import Timestamp
from psycopg import AsyncConnection

from serving.model import describe
from streamflow.adapters import feast_layout
from streamflow.domain.features import FEATURE_NAMES, FEATURE_SERVICE, FEATURES

FeatureValue = int | float | bool | str | None


@dataclass(frozen=True)
class OnlineFeatures:
    """The raw feature values of some users, in request order, with each view's event time.

    `values[feature][i]` is what Feast's SDK returns for user i (None when empty or not held);
    `event_times[view][i]` is None when the view holds no row for user i.
    """

    user_ids: Sequence[str]
    values: dict[str, list[FeatureValue]]
    event_times: dict[str, list[datetime | None]]
    view_features: dict[str, tuple[str, ...]]

    def missing_features(self, i: int) -> list[str]:
        """Features of the views that hold no row for user i; all of them for an unknown user."""
        return [
            name
            for view, names in self.view_features.items()
            if self.event_times[view][i] is None
            for name in names
        ]

    def row(self, i: int) -> dict[str, FeatureValue]:
        """User i's features for a response: Float32 values as their shortest decimal."""
        row = {name: self.values[name][i] for name in FEATURE_NAMES}
        for name in _FLOAT32:
            if row[name] is not None:
                row[name] = _shortest(row[name])
        return row

    def view_times(self, i: int) -> dict[str, datetime | None]:
        return {view: times[i] for view, times in self.event_times.items()}

    def as_of(self, i: int) -> datetime | None:
        """The oldest event time of user i's views: how old the features as a whole are."""
        times = [times[i] for times in self.event_times.values()]
        return None if None in times else min(times)

    def part(self, start: int, stop: int) -> OnlineFeatures:
        """Users `start` to `stop` (excluded) of the read."""
        return OnlineFeatures(
            self.user_ids[start:stop],
            {name: values[start:stop] for name, values in self.values.items()},
            {view: times[start:stop] for view, times in self.event_times.items()},
            self.view_features,
        )

    def columns(self, rows: Sequence[int]) -> dict[str, list[FeatureValue]]:
        """Raw values of some rows, feature by feature: the input of `features.model_inputs`."""
        return {name: [self.values[name][i] for i in rows] for name in FEATURE_NAMES}


class OnlineStoreUnavailable(Exception):
    """A read of the online store failed: the API answers 503 naming the store, never 500."""

    def __init__(self, store: str, error: BaseException):
        super().__init__(f"online store {store} unavailable: {describe(error)}")
        self.store = store


def is_stale(as_of: datetime, now: datetime, max_age: timedelta | None) -> bool:
    return max_age is not None and now - as_of > max_age


# Entries per cache of values and keys below: what the API's memory grows by under traffic. At
# 65,536 entries each, the three took 48 MB once enough of a million users had been read
# (measured), taking the server past its 400 MB budget; 8,192 keep the values that repeat
# (categories, flags, counts) and the recently seen users' keys and floats in about 6 MB.
_CACHED = 1 << 13


# Feature values repeat a lot (flags, counts, categories, fees): decoding each distinct
# serialized ValueProto once makes a read mostly dictionary lookups. Bounded, as values of
# continuous features are many.
@lru_cache(maxsize=_CACHED)
def _decode(value: bytes) -> FeatureValue:
    return feast_value_type_to_python_type(ValueProto.FromString(value))


_FLOAT32 = frozenset(f.name for f in FEATURES if f.dtype == "Float32")


# Feast returns a Float32 value widened to a Python float (68.4 comes back as 68.4000015258789);
# responses show the shortest decimal with the same float32, which is the source value. The model
# reads the widened value (`columns`), as in training: both are the same float32.
@lru_cache(maxsize=_CACHED)
def _shortest(value: float) -> float:
    return float(str(np.float32(value)))


# Serializing a key builds two protos: a tenth of a read. Users come back, their keys do not change.
@lru_cache(maxsize=_CACHED)
def _serialized_key(user_id: str, version: int) -> bytes:
    return feast_layout.serialized_key(user_id, version)


@lru_cache(maxsize=1 << 10)
def _redis_event_time(stamp: bytes) -> datetime:
    # As Feast's Redis read path turns the stored protobuf Timestamp into a datetime.
    parsed = Timestamp.FromString(stamp)
    return datetime.fromtimestamp(parsed.seconds + parsed.nanos / 1e9, tz=UTC)


@lru_cache(maxsize=1 << 10)
def _event_time(epoch: int) -> datetime:
    # As Feast's SQLite read path turns the stored epoch into a datetime: its converter, then UTC.
    return convert_timestamp(str(epoch).encode()).replace(tzinfo=UTC)


@lru_cache(maxsize=1 << 10)
def _postgres_event_time(stamp: datetime) -> datetime:
    # psycopg gives a timestamptz in the session's time zone; the same instant, in UTC as the
    # other stores give it.
    return stamp.astimezone(UTC)


class OnlineFeatureReader:
    """Reads `churn_model_v1`'s features of users from the store's online store.

    Feast's `get_online_features` spends milliseconds per call resolving the feature service in
    the registry and building protos, dicts and a response; the data is a few rows per view.
    This resolves the views once and reads the rows in one round trip: one query over the
    SQLite or PostgreSQL online store's tables (a UNION ALL of the four views' tables, on
    PostgreSQL a prepared statement with binary results), or one HMGET per user over Redis
    (Feast keeps every view of an entity in one hash), all users in one pipeline. Any other
    online store: its own `online_read`, per view. Values are decoded with Feast's converter,
    so the reader returns what the SDK returns (tested user by user on every profile).
    """

    def __init__(self, store: FeatureStore, use_sql: bool | None = None, sqlite_cache_mib: int = 0):
        """`use_sql`: read a SQL store in one query (default) or, False, by Feast's per-view
        `online_read` (the reference the tests compare the query with)."""
        service = store.get_feature_service(FEATURE_SERVICE)
        self._config = store.config
        self._online = store.provider.online_store
        self._views = [
            (store.get_feature_view(projection.name), tuple(f.name for f in projection.features))
            for projection in service.feature_view_projections
        ]
        served = sorted(name for _, names in self._views for name in names)
        if served != sorted(FEATURE_NAMES):
            raise ValueError(
                f"feature service {FEATURE_SERVICE} serves {served}, the model expects "
                f"{sorted(FEATURE_NAMES)}: re-apply the Feast repo"
            )
        self.view_features = {view.name: names for view, names in self._views}
        self.store_name = type(self._online).__name__
        self.uses_postgres = isinstance(self._online, PostgreSQLOnlineStore)
        is_sql = self.uses_postgres or isinstance(self._online, SqliteOnlineStore)
        if use_sql and not is_sql:
            raise ValueError(f"use_sql: {self.store_name} is not a SQL online store")
        self.uses_sql = is_sql if use_sql is None else use_sql
        # Both stores name a view's table alike and take double-quoted identifiers.
        self._tables = [
            feast_layout.quote_id(feast_layout.table_name(self._config, view))
            for view, _ in self._views
        ]
        self._key_version = self._config.entity_key_serialization_version
        if self.uses_sql and not self.uses_postgres and sqlite_cache_mib > 0:
            # SQLite's page cache is 2 MiB per connection by default: a read of a user whose
            # pages are not in it copies them in with a system call each (seven per read of the
            # 7k-user store). Negative: the size in KiB.
            connection = self._online._get_conn(self._config)
            connection.execute(f"PRAGMA cache_size = -{sqlite_cache_mib * 1024}")
        self._single_query = ""
        self._single_query = self._query(1)
        # PostgreSQL takes the keys as one array: one statement (prepared once) for any count.
        self._many_query = self._query(2) if self.uses_postgres else ""
        # `read_async` on PostgreSQL: the requests waiting for the next query, the task reading
        # for them, its connection.
        self._waiting: list[tuple[Sequence[str], asyncio.Future[OnlineFeatures]]] = []
        self._querying: asyncio.Task[None] | None = None
        self._async_connection: AsyncConnection | None = None
        self.uses_redis = isinstance(self._online, RedisOnlineStore)
        # Per view: its features' hash fields, then its event-time field (Feast's key encoding).
        self._redis_fields = []
        for view, names in self._views:
            name = feast_layout.redis_view_name(self._config, view)
            self._redis_fields += [feast_layout.redis_field(name, feature) for feature in names]
            self._redis_fields.append(f"_ts:{name}")

    def read(self, user_ids: Sequence[str]) -> OnlineFeatures:
        try:
            if self.uses_sql:
                return self._read_sql(user_ids)
            if self.uses_redis:
                return self._read_redis(user_ids)
            return self._read_views(user_ids)
        # Every online store (SQLite, PostgreSQL, Redis) raises its own driver's errors; whatever
        # the read raised, the store did not answer, and the client is told which one.
        except Exception as error:
            raise OnlineStoreUnavailable(self.store_name, error) from error

    def _read_redis(self, user_ids: Sequence[str]) -> OnlineFeatures:
        project = self._config.project.encode()
        client = self._online._get_client(self._config.online_store)
        with client.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                key = _serialized_key(user_id, self._key_version)
                pipe.hmget(key + project, self._redis_fields)
            replies = pipe.execute()
        count = len(user_ids)
        values: dict[str, list[FeatureValue]] = {name: [None] * count for name in FEATURE_NAMES}
        event_times: dict[str, list[datetime | None]] = {}
        column = 0
        for view, names in self._views:
            times = event_times[view.name] = [None] * count
            stamps = column + len(names)
            for i, reply in enumerate(replies):
                # No event time: the hash holds no row of this view (Feast would say 1970).
                if reply[stamps] is None:
                    continue
                times[i] = _redis_event_time(reply[stamps])
                for offset, name in enumerate(names):
                    value = reply[column + offset]
                    values[name][i] = _decode(value) if value else None
            column = stamps + 1
        return OnlineFeatures(user_ids, values, event_times, self.view_features)

    def _query(self, count: int) -> str:
        if count == 1 and self._single_query:
            return self._single_query
        # One user (every /predict) needs no key column to place rows by.
        key_column = "entity_key, " if count > 1 else ""
        if self.uses_postgres:
            # A named parameter used in every view's part is sent once. One user's key by
            # equality: a generic plan of `= ANY(array)` scans the index for a bitmap (about
            # twice the time of the plain index scan `=` gets, measured).
            keys = "= %(key)s" if count == 1 else "= ANY(%(keys)s)"
            event_ts = "event_ts"
        else:
            # Numbered parameters: every view's part reuses the same keys, passed once.
            keys = "IN ({})".format(",".join(f"?{n}" for n in range(1, count + 1)))
            event_ts = "CAST(event_ts AS INTEGER)"
        return " UNION ALL ".join(
            f"SELECT {index}, {key_column}feature_name, value, {event_ts} "
            f"FROM {table} WHERE entity_key {keys}"
            for index, table in enumerate(self._tables)
        )

    def _postgres_query(self, keys: list[bytes]) -> tuple[str, dict[str, Any]]:
        if len(keys) == 1:
            return self._single_query, {"key": keys[0]}
        return self._many_query, {"keys": keys}

    def _read_sql(self, user_ids: Sequence[str]) -> OnlineFeatures:
        keys = [_serialized_key(user_id, self._key_version) for user_id in user_ids]
        # Private, kept on purpose (Feast 0.67.0): the online store's own connection (opened
        # with its config's settings; ours reopens a dropped one); Feast has no public one.
        if not self.uses_postgres:
            rows = self._online._get_conn(self._config).execute(self._query(len(keys)), keys)
            return self._place(user_ids, keys, rows, _event_time)
        query, params = self._postgres_query(keys)
        with self._online._get_conn(self._config, autocommit=True) as connection:
            # Prepared on the server at the first read (parsed and planned once per
            # connection); binary results: bytea as it is stored, no hex text to decode.
            rows = connection.execute(query, params, prepare=True, binary=True).fetchall()
        return self._place(user_ids, keys, rows, _postgres_event_time)

    def _place(
        self,
        user_ids: Sequence[str],
        keys: list[bytes],
        rows: Iterable[tuple],
        event_time: Callable[[Any], datetime],
    ) -> OnlineFeatures:
        """The features of `user_ids` from the rows of the query over their `keys`."""
        count = len(user_ids)
        values: dict[str, list[FeatureValue]] = {name: [None] * count for name in FEATURE_NAMES}
        # Per view, the lists of its served features: a view's table may hold more features.
        served = [{name: values[name] for name in names} for _, names in self._views]
        stamps: list[list[Any]] = [[None] * count for _ in self._views]
        if count == 1:
            for view, name, value, stamp in rows:
                column = served[view].get(name)
                if column is not None:
                    column[0] = _decode(value)
                    stamps[view][0] = stamp
        else:
            positions: dict[bytes, list[int]] = {}
            for i, key in enumerate(keys):
                positions.setdefault(key, []).append(i)
            for view, key, name, value, stamp in rows:
                column = served[view].get(name)
                if column is not None:
                    decoded = _decode(value)
                    for i in positions[key]:
                        column[i] = decoded
                        stamps[view][i] = stamp
        event_times = {
            view.name: [None if stamp is None else event_time(stamp) for stamp in stamps[n]]
            for n, (view, _) in enumerate(self._views)
        }
        return OnlineFeatures(user_ids, values, event_times, self.view_features)

    async def read_async(self, user_ids: Sequence[str]) -> OnlineFeatures:
        """`read`, for a request on the event loop.

        SQLite and Redis answer in tens of microseconds: read in line. A PostgreSQL read waits
        for the server, and a blocking one would hold up every other request meanwhile. Here
        the loop serves other requests during the query, and the requests that arrive while a
        query runs are read together by the next one (one query for all their keys, on the
        reader's own asynchronous connection): one round trip, however many requests wait.
        """
        if not (self.uses_sql and self.uses_postgres):
            return self.read(user_ids)
        waiter: asyncio.Future[OnlineFeatures] = asyncio.get_running_loop().create_future()
        self._waiting.append((user_ids, waiter))
        if self._querying is None:
            self._querying = asyncio.create_task(self._read_waiting())
        return await waiter

    async def _read_waiting(self) -> None:
        """Read for the waiting requests, one query at a time, until none waits."""
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                user_ids = [user_id for ids, _ in batch for user_id in ids]
                try:
                    features = await self._read_postgres_async(user_ids)
                # As in `read`: whatever the query raised, the store did not answer.
                except Exception as error:
                    for _, waiter in batch:
                        if not waiter.done():
                            waiter.set_exception(OnlineStoreUnavailable(self.store_name, error))
                    continue
                start = 0
                for ids, waiter in batch:
                    stop = start + len(ids)
                    # The waiter of a request that went away (its client left) is cancelled.
                    if not waiter.done():
                        waiter.set_result(
                            features if len(batch) == 1 else features.part(start, stop)
                        )
                    start = stop
        finally:
            self._querying = None

    async def _read_postgres_async(self, user_ids: list[str]) -> OnlineFeatures:
        if self._async_connection is None or self._async_connection.closed:
            # Private, kept on purpose (Feast 0.67.0): the function that opens an asynchronous
            # connection with the online store config's own settings; Feast has no public one.
            # One the server or the network dropped is closed: the next read opens another.
            self._async_connection = await feast_layout.connect_async(self._config.online_store)
            await self._async_connection.set_autocommit(True)
        keys = [_serialized_key(user_id, self._key_version) for user_id in user_ids]
        query, params = self._postgres_query(keys)
        cursor = await self._async_connection.execute(query, params, prepare=True, binary=True)
        return self._place(user_ids, keys, await cursor.fetchall(), _postgres_event_time)

    def _read_views(self, user_ids: Sequence[str]) -> OnlineFeatures:
        keys = [feast_layout.entity_key(user_id) for user_id in user_ids]
        values: dict[str, list[FeatureValue]] = {}
        event_times: dict[str, list[datetime | None]] = {}
        for view, names in self._views:
            rows = self._online.online_read(self._config, view, keys, list(names))
            event_times[view.name] = [event_time for event_time, _ in rows]
            for name in names:
                values[name] = [
                    feast_value_type_to_python_type(data[name])
                    if data is not None and name in data
                    else None
                    for _, data in rows
                ]
        return OnlineFeatures(user_ids, values, event_times, self.view_features)
